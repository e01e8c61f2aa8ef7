"""Task attributes: automated discovery of what a text-encoder SAE latent does to images.

For the latents with the largest activation mass on the training prompts, generate with and
without the latent added (saeprobe.diffusion.steering.discover_attributes), score the change
against an attribute vocabulary and keep latents whose attribute is consistent across prompts
and seeds; each latent's input-side concept (prompt-word contrast) is recorded beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from saeprobe.diffusion.experiment import (
    load_scorer,
    run_attribute_experiment,
    sweep_saes,
    world_vocabulary,
)
from saeprobe.diffusion.pipeline import load_pipeline
from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import attribute_grid


def attributes_task(
    shared: Mapping[str, Any],
    settings: Mapping[str, Any],
    activations: str | Path,
    vocab: str | Path | None,
    out: Mapping[str, str],
    device: torch.device,
) -> None:
    """Run attribute discovery and write `out`: table, grid (PNG) and grid_pdf. Arguments as
    `saeprobe.eval.steering.steering_task`, with settings `diffusion.attributes`."""
    pipe = load_pipeline(shared["source"], device, shared["dtype"])
    scorer = load_scorer(shared["scorer"], shared["world_clip"], device)
    groups = None
    if settings["vocabulary"] == "world":
        vocabulary, groups = world_vocabulary(json.loads(Path(vocab).read_text()))
    else:
        vocabulary = dict(settings["vocabulary"])
    saes = sweep_saes(shared["model"], shared["sae_dirs"], activations)
    table, images = run_attribute_experiment(
        pipe,
        saes,
        settings,
        shared["generation"],
        scorer,
        vocabulary,
        groups,
        list(vocabulary),
    )
    atomic_write_csv(out["table"], table)
    first = table[table["sae"] == table["sae"].iloc[0]]
    save_figure(attribute_grid(first, images), out["grid"], out["grid_pdf"])
