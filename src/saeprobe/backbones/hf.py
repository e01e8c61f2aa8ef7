"""transformers vision models: CLIP vision towers and DINOv2, loaded with from_pretrained."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    Dinov2Model,
    Dinov2WithRegistersModel,
)
from transformers.utils import logging as hf_logging

from saeprobe.backbones.base import Backbone, amp_dtype, seeded_init
from saeprobe.data.preprocess import PreprocessParams

_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
MODEL_TYPES = ("clip", "clip_vision_model", "dinov2", "dinov2_with_registers")


def _size_value(size: object, *keys: str) -> int | None:
    for key in keys:
        value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
        if value is not None:
            return int(value)
    return None


def preprocess_from_hf(processor: object) -> PreprocessParams:
    """PreprocessParams from a transformers image processor (CLIP, Bit/DINOv2)."""
    size = processor.size
    shortest = _size_value(size, "shortest_edge")
    if shortest is not None:
        resize_size, mode = shortest, "shortest"
    else:
        height, width = _size_value(size, "height"), _size_value(size, "width")
        if height is None or height != width:
            raise ValueError(f"image processor size {size}: expected shortest_edge or a square")
        resize_size, mode = height, "squash"
    crop = bool(getattr(processor, "do_center_crop", False))
    image_size = _size_value(processor.crop_size, "height") if crop else resize_size
    resample = processor.resample
    resample = getattr(resample, "value", resample)
    interpolation = _RESAMPLE.get(int(resample), "bicubic") if resample is not None else "bicubic"
    return PreprocessParams(
        image_size=int(image_size),
        resize_size=resize_size,
        mean=tuple(float(v) for v in processor.image_mean),
        std=tuple(float(v) for v in processor.image_std),
        interpolation=interpolation,
        resize_mode=mode,
        center_crop=crop,
        crop_rounding="floor",
    )


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence the load report that lists the text tower's weights as unused."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


class HFBackbone(Backbone):
    """A transformers ViT: CLIP vision tower (with projection if the checkpoint has one) or DINOv2.

    pooled = CLIP `image_embeds` (with projection) or `pooler_output`; DINOv2 `pooler_output`
    (the CLS token after the final layernorm).
    """

    def __init__(
        self, spec: Mapping, device: torch.device, precision: str = "auto", seed: int = 0
    ) -> None:
        if "name" not in spec:
            raise ValueError("hf model spec: missing key 'name' (a hub id or a local directory)")
        name = spec["name"]
        revision = spec.get("revision")
        config = AutoConfig.from_pretrained(name, revision=revision)
        model_type = config.model_type
        architectures = getattr(config, "architectures", None) or []
        self.num_prefix_tokens = 1
        own_config = None  # a config to build from instead of the checkpoint's
        if model_type == "clip":
            # a full CLIP checkpoint: keep its vision tower and visual projection only
            own_config = config.vision_config
            own_config.projection_dim = config.projection_dim
            model_class = CLIPVisionModelWithProjection
        elif model_type == "clip_vision_model" and "CLIPVisionModelWithProjection" in architectures:
            model_class = CLIPVisionModelWithProjection
        elif model_type == "clip_vision_model":
            model_class = CLIPVisionModel
        elif model_type == "dinov2":
            model_class = Dinov2Model
        elif model_type == "dinov2_with_registers":
            model_class = Dinov2WithRegistersModel
            self.num_prefix_tokens = 1 + int(config.num_register_tokens)
        else:
            raise ValueError(
                f"hf model {name!r}: model_type {model_type!r} is not supported; "
                f"expected one of {list(MODEL_TYPES)}"
            )
        if spec.get("untrained"):
            with seeded_init(seed):
                model = model_class(own_config or config).to(torch.float32)
        elif own_config is not None:
            with _quiet_loading():
                model = model_class.from_pretrained(
                    name, config=own_config, revision=revision, dtype=torch.float32
                )
        else:
            model = model_class.from_pretrained(name, revision=revision, dtype=torch.float32)
        if model_class is CLIPVisionModelWithProjection:
            self._core, self._kind = model.vision_model, "clip_projection"
        elif model_class is CLIPVisionModel:
            self._core, self._kind = model, "clip"
        else:
            self._core, self._kind = model, "dinov2"
        self.model = model.eval().to(device)
        self.spec = dict(spec)
        self.device = device
        self.autocast_dtype = amp_dtype(precision, device)
        self.preprocess_params = preprocess_from_hf(
            AutoImageProcessor.from_pretrained(name, revision=revision)
        )
        vision_config = self._core.config
        self.width = int(vision_config.hidden_size)
        grid = self.preprocess_params.image_size // int(vision_config.patch_size)
        self.num_tokens = grid * grid + self.num_prefix_tokens
        if self._kind == "clip_projection":
            self.embed_dim = int(model.config.projection_dim)
        else:
            self.embed_dim = self.width

    @property
    def blocks(self) -> Sequence[nn.Module]:
        if self._kind == "dinov2":
            return self._core.encoder.layer
        return self._core.encoder.layers

    def _pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        if self._kind == "clip_projection":
            return out.image_embeds
        return out.pooler_output


def load_hf(
    spec: Mapping, device: torch.device, precision: str = "auto", seed: int = 0
) -> Backbone:
    """spec: `{source: hf, name: <hub id or local dir>, revision?, untrained?}`; `untrained`:
    the checkpoint's architecture (its config) at the library's random initialisation, seeded
    by `seed`, with the checkpoint's own image processor."""
    return HFBackbone(spec, device, precision, seed)
