"""Image preprocessing parameters and the per-item / batched resize + center crop.

Backbones report how their library preprocesses images (`PreprocessParams`); datasets apply
the geometric part (resize, center crop) and hand out uint8 tensors; the backbone applies the
photometric part (scale to [0, 1], normalise) batched on its device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from PIL import Image

if TYPE_CHECKING:
    from torchvision.transforms import InterpolationMode

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def _tf() -> ModuleType:
    """torchvision's functional transforms, imported on first use: importing torchvision costs
    about 2 s (it loads torch._dynamo), which every job that only reads this module's
    `PreprocessParams` would otherwise pay."""
    import torchvision.transforms.functional as TF

    return TF


@dataclass(frozen=True)
class PreprocessParams:
    """How a backbone expects its images.

    image_size: side of the square model input (after the center crop).
    resize_size: target of the resize step: the shorter side (`resize_mode="shortest"`) or both
        sides (`resize_mode="squash"`).
    center_crop: crop the resized image to `image_size` x `image_size` around its center.
    mean, std: per-channel normalisation applied to pixels scaled to [0, 1].
    interpolation: one of nearest, bilinear, bicubic, lanczos, box, hamming.
    crop_rounding: how the crop offset (size difference / 2) is rounded: "round" as
        torchvision (open_clip), "floor" as transformers' image processors.
    """

    image_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    center_crop: bool = True
    crop_rounding: str = "round"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation: expected one of {sorted(_INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if self.resize_mode not in ("shortest", "squash"):
            raise ValueError(
                f"resize_mode: expected 'shortest' or 'squash', got {self.resize_mode!r}"
            )
        if self.crop_rounding not in ("round", "floor"):
            raise ValueError(
                f"crop_rounding: expected 'round' or 'floor', got {self.crop_rounding!r}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @property
    def interpolation_mode(self) -> InterpolationMode:
        return _tf().InterpolationMode(self.interpolation)


def _resize_target(params: PreprocessParams) -> int | list[int]:
    if params.resize_mode == "shortest":
        return params.resize_size
    return [params.resize_size, params.resize_size]


def _crop(
    image: Image.Image | torch.Tensor, params: PreprocessParams
) -> Image.Image | torch.Tensor:
    """Center crop to image_size, rounding the offset as the backbone's library does."""
    size = params.image_size
    if isinstance(image, Image.Image):
        width, height = image.size
    else:
        height, width = image.shape[-2:]
    if height < size or width < size:
        return _tf().center_crop(image, [size, size])
    if params.crop_rounding == "round":
        top, left = round((height - size) / 2.0), round((width - size) / 2.0)
    else:
        top, left = (height - size) // 2, (width - size) // 2
    return _tf().crop(image, int(top), int(left), size, size)


def draft(image: Image.Image, params: PreprocessParams) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), the smallest that
    keeps both sides at least the resize target; call before the image is loaded. Other
    formats, and JPEGs too small to shrink, are left alone. Decoding a large photograph this
    way costs a fraction of the full decode; the resize that follows sees fewer pixels, so the
    result differs from a full decode + resize by about a grey level
    (tests/unit/test_paper_scale.py).
    """
    if image.format == "JPEG":
        image.draft("RGB", (params.resize_size, params.resize_size))


def load_image(path: str | Path, params: PreprocessParams, draft_mode: bool = True) -> torch.Tensor:
    """Open, decode (JPEG draft mode when `draft_mode`), resize and crop one image file:
    (3, image_size, image_size) uint8."""
    with Image.open(path) as image:
        if draft_mode:
            draft(image, params)
        image.load()
        return transform_pil(image, params)


def transform_pil(image: Image.Image, params: PreprocessParams) -> torch.Tensor:
    """Convert to RGB, resize, center crop (torchvision ops, as open_clip's own transform).

    Returns: (3, image_size, image_size) uint8.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    TF = _tf()
    image = TF.resize(image, _resize_target(params), interpolation=params.interpolation_mode)
    if params.center_crop:
        image = _crop(image, params)
    return TF.pil_to_tensor(image)


def transform_batch(images: torch.Tensor, params: PreprocessParams) -> torch.Tensor:
    """Batched resize + center crop of uint8 images; a no-op when they already have the size.

    images: (batch, 3, H, W) uint8. Returns (batch, 3, image_size, image_size) uint8.
    Uses antialiased tensor resizing, which can differ from PIL's by one grey level.
    """
    size = params.image_size
    height, width = images.shape[-2:]
    if params.resize_mode == "shortest":
        needs_resize = min(height, width) != params.resize_size
    else:
        needs_resize = (height, width) != (params.resize_size, params.resize_size)
    if needs_resize:
        TF = _tf()
        smooth = params.interpolation in ("bilinear", "bicubic")
        mode = TF.InterpolationMode(params.interpolation if smooth else "nearest")
        images = TF.resize(images, _resize_target(params), interpolation=mode, antialias=True)
    if params.center_crop and tuple(images.shape[-2:]) != (size, size):
        images = _crop(images, params)
    return images
