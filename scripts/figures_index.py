"""Write results/figures/index.html: every figure of the run on one page (PNG, with its PDF)."""

from saeprobe.jobs import job
from saeprobe.summary import write_figures_index

with job(snakemake):
    write_figures_index(snakemake.input.figures, snakemake.output[0])
