"""Task steering: add a text-encoder SAE latent's decoder direction, measure what changes.

Per SAE of the diffusion model's text encoder, each concept's latent is the one whose code
differs most between the training prompts that contain the concept word and those that do
not; generation is steered with it at several strengths (saeprobe.diffusion.steering), and
the images are scored against every concept (CLIP) and, in the world, by pixel colour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saeprobe.diffusion.experiment import Experiment, run_steering_experiment, world_colours
from saeprobe.io import atomic_write_csv, atomic_write_json
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import effect_curves, steering_effect, steering_grid


def steering_task(exp: Experiment, settings: Mapping[str, Any], out: Mapping[str, str]) -> None:
    """Run steering (settings: `diffusion.steering`) and write `out`: table, latents (JSON),
    grid, effect and preservation figures (PNG, and `*_pdf`)."""
    colours = world_colours(exp.vocab) if exp.world else None
    device = exp.pipe.text_encoder.device
    table, chosen, images = run_steering_experiment(
        exp.pipe, exp.saes, settings, exp.generation, exp.scorer, colours, device, exp.gate
    )
    atomic_write_csv(out["table"], table)
    atomic_write_json(out["latents"], chosen)
    steered = set(table["concept"])
    grid_concepts = [c for c in settings["grid_concepts"] if c in steered]
    fig = steering_grid(
        images,
        grid_concepts,
        settings["prompts"],
        len(settings["seeds"]),
        settings["strengths"],
        table["sae"].iloc[0],
    )
    save_figure(fig, out["grid"], out["grid_pdf"])
    save_figure(steering_effect(table, exp.world), out["effect"], out["effect_pdf"])
    fig = effect_curves(
        table,
        "preservation",
        "image-embedding cosine to unsteered",
        "Preservation vs strength (mean ± sd over prompts x seeds; points: images)",
    )
    save_figure(fig, out["preservation"], out["preservation_pdf"])
