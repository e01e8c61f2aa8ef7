"""open_clip vision towers (VisionTransformer), from the hub or from a local checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import open_clip
import torch
from torch import nn

from saeprobe.backbones.base import Backbone, amp_dtype, seeded_init
from saeprobe.data.preprocess import PreprocessParams


def preprocess_from_open_clip(cfg: Mapping) -> PreprocessParams:
    """PreprocessParams from an open_clip `model.visual.preprocess_cfg`."""
    size = cfg.get("size", 224)
    if isinstance(size, list | tuple):
        if size[0] != size[1]:
            raise ValueError(f"open_clip preprocess size {size}: only square inputs are supported")
        size = size[0]
    mode = cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise ValueError(f"open_clip resize_mode {mode!r} is not supported (shortest, squash)")
    interpolation = cfg.get("interpolation", "bicubic")
    return PreprocessParams(
        image_size=int(size),
        resize_size=int(size),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
        resize_mode=mode,
        center_crop=True,
    )


class OpenClipBackbone(Backbone):
    """The vision tower of an open_clip CLIP model (a `VisionTransformer`)."""

    def __init__(
        self,
        model: nn.Module,
        spec: Mapping,
        device: torch.device,
        precision: str = "auto",
    ) -> None:
        visual = model.visual
        if not isinstance(visual, open_clip.transformer.VisionTransformer):
            raise ValueError(
                f"model {spec.get('name')!r}: vision tower {type(visual).__name__} is not an "
                "open_clip VisionTransformer; only ViT towers are supported"
            )
        self.model = visual.eval().to(device)
        self.spec = dict(spec)
        self.device = device
        self.autocast_dtype = amp_dtype(precision, device)
        self.preprocess_params = preprocess_from_open_clip(visual.preprocess_cfg)
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.num_prefix_tokens = 1
        self.width = visual.transformer.width
        self.embed_dim = visual.output_dim
        self.num_tokens = visual.grid_size[0] * visual.grid_size[1] + 1

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.model.transformer.resblocks

    def _pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixels)
        return out[0] if isinstance(out, tuple) else out


def load_open_clip_model(
    spec: Mapping, device: torch.device, seed: int = 0
) -> tuple[nn.Module, Callable[[list[str]], torch.Tensor]]:
    """The whole CLIP (image and text towers) and its tokenizer, in eval mode.

    spec: `{source: open_clip, name, weights}` (hub tag or file) or `{source: world, weights}`.
    A world model (`weights`: its directory, filled in by the workflow) holds
    `open_clip_config.json` + `open_clip_model.safetensors`, loaded by
    `saeprobe.world.clip.load_world_clip` (open_clip.add_model_config +
    create_model_and_transforms, the same call that loads hub models).
    With `untrained: true` an open_clip spec gives the architecture at its own random
    initialisation (seeded by `seed`, see `untrained_open_clip`); no weights are read.
    """
    if spec["source"] == "world":
        from saeprobe.world.clip import load_world_clip

        if not spec.get("weights"):
            raise ValueError("world model spec: missing key 'weights' (the world CLIP's folder)")
        model, _, tokenizer = load_world_clip(spec["weights"], device)
        return model, tokenizer
    if "name" not in spec:
        raise ValueError("open_clip model spec: missing key 'name' (e.g. ViT-L-14)")
    if spec.get("untrained"):
        model = untrained_open_clip(spec["name"], spec.get("weights"), device, seed)
    else:
        model, _, _ = open_clip.create_model_and_transforms(
            spec["name"], pretrained=spec.get("weights"), device=device
        )
    return model.eval(), open_clip.get_tokenizer(spec["name"])


def untrained_open_clip(
    name: str, weights: str | None, device: torch.device, seed: int
) -> nn.Module:
    """The CLIP `name` (+ `weights`) would load, at open_clip's own random initialisation.

    The architecture and preprocessing are those of the trained checkpoint: a built-in name
    takes the preprocessing (mean, std, interpolation, resize mode) and QuickGELU setting of
    its pretrained tag `weights`, read from open_clip's tag table without a download; a
    `local-dir:` or `hf-hub:` name its folder's `open_clip_config.json` (of an `hf-hub:` repo
    only that file is fetched, see `config_only`). No tower loads base weights.
    """
    force_preprocess, quick_gelu = untrained_open_clip_settings(name, weights)
    with seeded_init(seed):
        model = open_clip.create_model(
            config_only(name),
            pretrained=None,
            load_weights=False,
            force_quick_gelu=quick_gelu,
            force_preprocess_cfg=force_preprocess,
            pretrained_image=False,
            pretrained_text=False,
        )
    return model.to(device)


def config_only(name: str) -> str:
    """`name`, with an `hf-hub:org/repo` name turned into `local-dir:` of the cache folder that
    holds the repo's `open_clip_config.json`, fetched alone: open_clip's `hf-hub:` path would
    also download the weights file (gigabytes) that an untrained copy never loads."""
    if not name.startswith("hf-hub:"):
        return name
    config = open_clip.pretrained.download_pretrained_from_hf(
        name.removeprefix("hf-hub:"), filename="open_clip_config.json"
    )
    return f"local-dir:{Path(config).parent}"


def untrained_open_clip_settings(name: str, weights: str | None) -> tuple[dict, bool]:
    """(preprocessing overrides, QuickGELU) that the pretrained tag `weights` of the built-in
    architecture `name` sets; ({}, False) for a schema name, a weights file or no weights."""
    if not weights or name.startswith(("local-dir:", "hf-hub:")):
        return {}, False
    tag = open_clip.get_pretrained_cfg(name.replace("/", "-"), weights)
    keys = ("mean", "std", "interpolation", "resize_mode")
    return {k: tag[k] for k in keys if k in tag}, bool(tag.get("quick_gelu", False))


def load_open_clip(
    spec: Mapping, device: torch.device, precision: str = "auto", seed: int = 0
) -> Backbone:
    """The vision tower of the CLIP `spec` names (see `load_open_clip_model`)."""
    model, _ = load_open_clip_model(spec, device, seed)
    return OpenClipBackbone(model, spec, device, precision)
