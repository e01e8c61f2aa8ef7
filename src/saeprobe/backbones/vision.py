"""The vision collector: a ViT backbone's residual stream and pooled embedding on images."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from saeprobe.backbones.base import Backbone, site_name
from saeprobe.backbones.collector import Collector, SiteRows
from saeprobe.data import ImageBatch, ImageDataset, load_dataset


class VisionCollector(Collector):
    """Sites `L{layer}_{tokens}` (tokens: cls, patches, all, mean) and `pooled` of a ViT.

    spec: a `models:` entry (source world, open_clip or hf) with layers, tokens and pooled.
    """

    def __init__(self, backbone: Backbone, spec: Mapping) -> None:
        self.backbone = backbone
        self.spec = dict(spec)
        self.device = backbone.device
        self.layers = sorted({int(v) for v in spec.get("layers", [])})
        self.tokens = list(spec.get("tokens", ["cls"]))
        self.pooled = bool(spec.get("pooled", True))
        if not self.pooled and not self.layers:
            raise ValueError("model spec: nothing to extract (no 'layers' and 'pooled' is false)")
        for layer in self.layers:
            backbone.check_layer(layer)

    @property
    def name(self) -> str:
        return self.backbone.name

    def sites(self) -> list[str]:
        sites = [site_name(layer, tok) for layer in self.layers for tok in self.tokens]
        return [*sites, "pooled"] if self.pooled else sites

    def open(self, dataset_spec: Mapping, seed: int) -> ImageDataset:
        return load_dataset(dataset_spec, self.backbone.preprocess_params, seed=seed)

    def max_rows_per_example(self, site: str) -> int:
        tokens = site.partition("_")[2]
        if tokens == "all":
            return self.backbone.num_tokens
        if tokens == "patches":
            return self.backbone.num_tokens - self.backbone.num_prefix_tokens
        return 1

    def collect(self, batch: ImageBatch) -> dict[str, SiteRows]:
        """images (B, 3, H, W) uint8 -> per site (B * tokens, d) rows."""
        pixels = self.backbone.prepare(batch.images)
        acts = self.backbone.collect(pixels, self.layers, self.tokens, self.pooled)
        out = {}
        for site, act in acts.items():
            if act.ndim == 2:
                out[site] = SiteRows(act, batch.indices)
                continue
            n, t, d = act.shape
            first = 0 if site.endswith("_all") else self.backbone.num_prefix_tokens
            out[site] = SiteRows(
                act.reshape(n * t, d),
                np.repeat(batch.indices, t),
                position=np.tile(np.arange(first, first + t), n),
            )
        return out

    def describe(self) -> dict:
        return self.backbone.describe()


def load_vision(
    spec: Mapping, device: torch.device, precision: str, seed: int = 0
) -> VisionCollector:
    from saeprobe.backbones import load_backbone

    return VisionCollector(load_backbone(spec, device, precision, seed), spec)
