"""Task steering: add a text-encoder SAE latent's decoder direction, measure what changes.

Per SAE of the diffusion model's text encoder, each concept's latent is the one whose code
differs most between the training prompts that contain the concept word and those that do
not; generation is steered with it at several strengths (saeprobe.diffusion.steering), and
the images are scored against every concept (CLIP) and, in the world, by pixel colour.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from saeprobe.diffusion.experiment import (
    load_scorer,
    run_steering_experiment,
    sweep_saes,
    world_colours,
)
from saeprobe.diffusion.pipeline import load_pipeline
from saeprobe.io import atomic_write_csv, atomic_write_json
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import effect_curves, steering_effect, steering_grid


def steering_task(
    shared: Mapping[str, Any],
    settings: Mapping[str, Any],
    activations: str | Path,
    vocab: str | Path | None,
    out: Mapping[str, str],
    device: torch.device,
) -> None:
    """Run steering and write `out`: table, latents (JSON), grid, effect and preservation
    figures (PNG and `*_pdf`). shared: the workflow's diffusion params; settings:
    `diffusion.steering`; activations: the store of the SAEs' training prompts; vocab: the
    world's vocab.json (world models only)."""
    pipe = load_pipeline(shared["source"], device, shared["dtype"])
    scorer = load_scorer(shared["scorer"], shared["world_clip"], device)
    colours = world_colours(json.loads(Path(vocab).read_text())) if shared["world"] else None
    saes = sweep_saes(shared["model"], shared["sae_dirs"], activations)
    table, chosen, images = run_steering_experiment(
        pipe, saes, settings, shared["generation"], scorer, colours, device
    )
    atomic_write_csv(out["table"], table)
    atomic_write_json(out["latents"], chosen)
    grid_concepts = [c for c in settings["grid_concepts"] if c in settings["concepts"]]
    fig = steering_grid(
        images,
        grid_concepts,
        settings["prompts"],
        len(settings["seeds"]),
        settings["strengths"],
        table["sae"].iloc[0],
    )
    save_figure(fig, out["grid"], out["grid_pdf"])
    save_figure(steering_effect(table, shared["world"]), out["effect"], out["effect_pdf"])
    fig = effect_curves(
        table,
        "preservation",
        "image-embedding cosine to unsteered",
        "Preservation vs strength (mean ± sd over prompts x seeds; points: images)",
    )
    save_figure(fig, out["preservation"], out["preservation_pdf"])
