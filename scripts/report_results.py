"""Write results/RESULTS.md: every claim of the study, judged on this run's tables."""

from saeprobe.jobs import job
from saeprobe.summary import write_results

with job(snakemake) as j:
    write_results(snakemake.input.tables, j.params.setting, snakemake.output[0])
