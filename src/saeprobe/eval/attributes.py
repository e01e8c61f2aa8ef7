"""Task attributes: automated discovery of what a text-encoder SAE latent does to images.

For the latents with the largest activation mass on the training prompts, generate with and
without the latent added (saeprobe.diffusion.steering.discover_attributes), score the change
against an attribute vocabulary and keep latents whose attribute is consistent across prompts
and seeds; each latent's input-side concept (prompt-word contrast) is recorded beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saeprobe.diffusion.experiment import Experiment, run_attribute_experiment, world_vocabulary
from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import attribute_grid


def attributes_task(exp: Experiment, settings: Mapping[str, Any], out: Mapping[str, str]) -> None:
    """Run attribute discovery (settings: `diffusion.attributes`; vocabulary "world" = the
    world's attributes) and write `out`: table, grid (PNG) and grid_pdf."""
    groups = None
    if settings["vocabulary"] == "world":
        vocabulary, groups = world_vocabulary(exp.vocab)
    else:
        vocabulary = dict(settings["vocabulary"])
    table, images = run_attribute_experiment(
        exp.pipe,
        exp.saes,
        settings,
        exp.generation,
        exp.scorer,
        vocabulary,
        groups,
        list(vocabulary),
        exp.gate,
    )
    atomic_write_csv(out["table"], table)
    first = table[table["sae"] == table["sae"].iloc[0]]
    save_figure(attribute_grid(first, images), out["grid"], out["grid_pdf"])
