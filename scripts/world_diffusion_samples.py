"""Snakemake script (rule world_diffusion_samples): does the world's diffusion model follow the
prompted colour and shape? Generates "a {colour} {shape}" over colours x shapes x seeds.

output.table: world_diffusion.csv (per image: colour_ok, shape_ok); output.concepts:
world_diffusion_concepts.csv (per colour and shape: accuracy, Wilson CI, renderable: the gate
steering and attributes read); png/pdf: the sample grid (first two seeds).
"""

from saeprobe.diffusion.experiment import world_samples
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import samples_grid

out = snakemake.output
with job(snakemake) as j:
    p = j.params
    s = world_samples(dict(p.shared), snakemake.input.vocab, p.seed, j.device, p.render_threshold)
    atomic_write_csv(out.table, s.table)
    atomic_write_csv(out.concepts, s.concepts)
    save_figure(samples_grid(s.grid[:, :, :2], s.shapes, s.colours, s.summary), out.png, out.pdf)
