"""Snakemake script (rule world_diffusion_samples): does the world's diffusion model follow the
prompted colour and shape? Generates "a {colour} {shape}" over colours x shapes x seeds.

output.table: world_diffusion.csv (per image: colour_ok, shape_ok); png/pdf: the sample grid.
"""

import json
import logging
import sys
from pathlib import Path

import torch

from saeprobe.device import pick_device
from saeprobe.diffusion.experiment import load_scorer, prompt_following
from saeprobe.diffusion.pipeline import load_pipeline
from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import samples_grid

SHAPES = ["triangle", "square", "circle", "crescent", "star", "heart"]

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    shared = dict(snakemake.params.shared)
    device = pick_device(snakemake.params.device)
    vocab = json.loads(Path(snakemake.input.vocab).read_text())
    pipe = load_pipeline(shared["source"], snakemake.params.device, shared["dtype"])
    scorer = load_scorer({"source": "world"}, shared["world_clip"], device)
    shapes = [s for s in SHAPES if s in vocab["train_shapes"]] or vocab["train_shapes"][:4]
    seeds = [snakemake.params.seed + i for i in range(2)]
    table, grid, colours = prompt_following(
        pipe, scorer, vocab, shapes, seeds, shared["generation"]
    )
    atomic_write_csv(snakemake.output.table, table)
    summary = (
        f"colour followed: {table['colour_ok'].mean():.0%} (chance {1 / len(colours):.0%}); "
        f"shape recognised by the world CLIP: {table['shape_ok'].mean():.0%} "
        f"(chance {1 / len(vocab['train_shapes']):.0%})"
    )
    logging.info(summary)
    fig = samples_grid(grid, shapes, colours, summary)
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)
