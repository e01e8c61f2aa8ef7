"""Snakemake script (rule attributes): automated attribute discovery for the strongest latents.

params: shared (see steering.py), attributes (`diffusion.attributes`), seed, device. output:
table (attributes.csv), grid figure (PNG + PDF) of with/without pairs per discovered latent.
"""

import json
import logging
import sys
from pathlib import Path

import torch

from saeprobe.device import pick_device
from saeprobe.diffusion.experiment import (
    load_scorer,
    run_attribute_experiment,
    world_vocabulary,
)
from saeprobe.diffusion.pipeline import load_pipeline
from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import attribute_grid

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    torch.manual_seed(snakemake.params.seed)
    shared, settings = dict(snakemake.params.shared), dict(snakemake.params.attributes)
    device = pick_device(snakemake.params.device)
    pipe = load_pipeline(shared["source"], snakemake.params.device, shared["dtype"])
    scorer = load_scorer(shared["scorer"], shared["world_clip"], device)
    groups = None
    if settings["vocabulary"] == "world":
        vocabulary, groups = world_vocabulary(json.loads(Path(snakemake.input.vocab).read_text()))
    else:
        vocabulary = dict(settings["vocabulary"])
    site_dirs = {Path(p).parent.name: Path(p).parent for p in snakemake.input.activations}
    sae_dirs = [Path(p).parent for p in snakemake.input.saes]
    table, images = run_attribute_experiment(
        pipe,
        sae_dirs,
        site_dirs,
        settings,
        shared["generation"],
        scorer,
        vocabulary,
        groups,
        list(vocabulary),
    )
    atomic_write_csv(snakemake.output.table, table)
    first = table[table["sae"] == table["sae"].iloc[0]]
    save_figure(attribute_grid(first, images), snakemake.output.grid, snakemake.output.grid_pdf)
