"""Backbones: one interface over open_clip and transformers vision transformers."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from saeprobe.backbones.base import TOKENS, Backbone, amp_dtype, site_name
from saeprobe.device import pick_device

SOURCES = ("world", "open_clip", "hf")


def load_backbone(
    spec: Mapping, device: str | torch.device = "auto", precision: str = "auto"
) -> Backbone:
    """Load the model a config spec names, in eval mode on `device`.

    spec: `{source: world, weights?}` (checkpoint dir, default results/models/world_clip),
          `{source: open_clip, name, weights}` or `{source: hf, name}`; `layers`, `tokens` and
          `pooled` keys are ignored here (they say what to collect).
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16".
    """
    device = device if isinstance(device, torch.device) else pick_device(device)
    source = spec.get("source")
    if source in ("world", "open_clip"):
        from saeprobe.backbones.openclip import load_open_clip

        return load_open_clip(spec, device, precision)
    if source == "hf":
        from saeprobe.backbones.hf import load_hf

        return load_hf(spec, device, precision)
    raise ValueError(f"model spec source: expected one of {list(SOURCES)}, got {source!r}")


__all__ = ["SOURCES", "TOKENS", "Backbone", "amp_dtype", "load_backbone", "site_name"]
