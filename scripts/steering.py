"""Snakemake script (rule steering): steer generation with SAE latents, measure, plot.

params: shared (model, source, world, dtype, scorer, generation, world_clip), steering
(`diffusion.steering`), seed, device. input: pipeline, saes, activations (site metadata.json),
scorer, vocab (world). output: table (steering.csv), latents (the latent chosen per concept),
grid / effect / preservation figures (PNG + PDF).
"""

import json
import logging
import sys
from pathlib import Path

import torch

from saeprobe.device import pick_device
from saeprobe.diffusion.experiment import load_scorer, run_steering_experiment, world_colours
from saeprobe.diffusion.pipeline import load_pipeline
from saeprobe.io import atomic_write_csv, atomic_write_json
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import effect_curves, steering_effect, steering_grid

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    torch.manual_seed(snakemake.params.seed)
    shared, settings = dict(snakemake.params.shared), dict(snakemake.params.steering)
    device = pick_device(snakemake.params.device)
    pipe = load_pipeline(shared["source"], snakemake.params.device, shared["dtype"])
    scorer = load_scorer(shared["scorer"], shared["world_clip"], device)
    colours = None
    if shared["world"]:
        colours = world_colours(json.loads(Path(snakemake.input.vocab).read_text()))
    site_dirs = {Path(p).parent.name: Path(p).parent for p in snakemake.input.activations}
    sae_dirs = [Path(p).parent for p in snakemake.input.saes]
    table, chosen, images = run_steering_experiment(
        pipe, sae_dirs, site_dirs, settings, shared["generation"], scorer, colours, device
    )
    atomic_write_csv(snakemake.output.table, table)
    atomic_write_json(snakemake.output.latents, chosen)
    out = snakemake.output
    first = table["sae"].iloc[0]
    grid_concepts = [c for c in settings["grid_concepts"] if c in settings["concepts"]]
    fig = steering_grid(
        images,
        grid_concepts,
        settings["prompts"],
        len(settings["seeds"]),
        settings["strengths"],
        first,
    )
    save_figure(fig, out.grid, out.grid_pdf)
    save_figure(steering_effect(table, shared["world"]), out.effect, out.effect_pdf)
    fig = effect_curves(
        table,
        "preservation",
        "image-embedding cosine to unsteered",
        "Preservation vs strength (mean ± sd over prompts x seeds; points: images)",
    )
    save_figure(fig, out.preservation, out.preservation_pdf)
