"""Snakemake script (rule world_diffusion_samples): does the world's diffusion model follow the
prompted colour and shape? Generates "a {colour} {shape}" over colours x shapes x seeds.

output.table: world_diffusion.csv (per image: colour_ok, shape_ok); png/pdf: the sample grid.
"""

from saeprobe.diffusion.experiment import world_samples
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import samples_grid

out = snakemake.output
with job(snakemake) as j:
    s = world_samples(dict(j.params.shared), snakemake.input.vocab, j.params.seed, j.device)
    atomic_write_csv(out.table, s.table)
    save_figure(samples_grid(s.grid, s.shapes, s.colours, s.summary), out.png, out.pdf)
