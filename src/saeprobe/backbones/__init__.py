"""Backbones: one collector interface over every model family.

Families by `source`: vision (world, open_clip, hf: ViTs on images), text_encoder
(world_diffusion, diffusers: a diffusion pipeline's CLIP text encoder on prompts) and mllm
(world_llava, llava: a LLaVA language model on image and caption tokens).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from saeprobe.backbones.base import TOKENS, Backbone, amp_dtype, site_name
from saeprobe.backbones.collector import Collector, SiteRows
from saeprobe.device import pick_device
from saeprobe.sites import FAMILIES, family_of

SOURCES = tuple(FAMILIES)


def load_backbone(
    spec: Mapping, device: str | torch.device = "auto", precision: str = "auto", seed: int = 0
) -> Backbone:
    """Load the model a config spec names, in eval mode on `device`.

    spec: `{source: world, weights}` (the world CLIP's checkpoint folder),
          `{source: open_clip, name, weights}` or `{source: hf, name}`; `layers`, `tokens` and
          `pooled` keys are ignored here (they say what to collect). `untrained: true` on an
          open_clip or hf spec: the checkpoint's architecture and preprocessing at the library's
          random initialisation, seeded by `seed` (the same seed gives the same weights).
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16".
    """
    device = device if isinstance(device, torch.device) else pick_device(device)
    source = spec.get("source")
    if source in ("world", "open_clip"):
        from saeprobe.backbones.openclip import load_open_clip

        return load_open_clip(spec, device, precision, seed)
    if source == "hf":
        from saeprobe.backbones.hf import load_hf

        return load_hf(spec, device, precision, seed)
    raise ValueError(f"model spec source: expected one of world, open_clip, hf; got {source!r}")


def load_collector(
    spec: Mapping, device: str | torch.device = "auto", precision: str = "auto", seed: int = 0
) -> Collector:
    """The collector of a `models:` entry, loaded in eval mode on `device`.

    precision applies to vision backbones (see `load_backbone`); the text encoder and the
    multimodal LLM take their weights' `dtype` from the spec. `seed` initialises an untrained
    vision model (`untrained: true`) and picks the image tokens kept per example where an MLLM
    spec limits them.
    """
    device = device if isinstance(device, torch.device) else pick_device(device)
    family = family_of(spec["source"])
    if family == "vision":
        from saeprobe.backbones.vision import load_vision

        return load_vision(spec, device, precision, seed)
    if family == "text_encoder":
        from saeprobe.backbones.text_encoder import load_text_encoder

        return load_text_encoder(spec, device)
    from saeprobe.backbones.mllm import MLLMCollector

    return MLLMCollector(spec, device, seed)


__all__ = [
    "FAMILIES",
    "SOURCES",
    "TOKENS",
    "Backbone",
    "Collector",
    "SiteRows",
    "amp_dtype",
    "family_of",
    "load_backbone",
    "load_collector",
    "site_name",
]
