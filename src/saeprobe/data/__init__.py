"""Dataset adapters: every image source yields uint8 batches sized for a backbone."""

from __future__ import annotations

from collections.abc import Mapping

from saeprobe.data.base import ImageBatch, ImageDataset, SkippedImage
from saeprobe.data.imagefolder import ImageFolderDataset
from saeprobe.data.preprocess import PreprocessParams, transform_batch, transform_pil
from saeprobe.data.world import WorldArrayDataset

SOURCES = ("world", "imagefolder")


def load_dataset(
    spec: Mapping,
    params: PreprocessParams,
    seed: int = 0,
    name: str | None = None,
) -> ImageDataset:
    """Build the dataset a config spec names.

    spec: `{source: world, root, split, max_images?, seed?}` or
          `{source: imagefolder, root, max_images?, seed?}`; an optional `name` key names it.
          `max_images` keeps a random subset seeded by the spec's `seed` (else `seed`).
    params: the backbone's preprocessing (decides the size of the returned images).
    """
    spec = dict(spec)
    name = name or spec.get("name")
    where = f"datasets.{name}" if name else "dataset spec"
    source = spec.get("source")
    for key in ("root",):
        if key not in spec:
            raise ValueError(f"{where}: missing key '{key}' (source {source!r})")
    if source == "world":
        if "split" not in spec:
            raise ValueError(f"{where}: missing key 'split' (source 'world')")
        return WorldArrayDataset(
            spec["root"],
            spec["split"],
            params,
            max_images=spec.get("max_images"),
            seed=int(spec.get("seed", seed)),
            name=name,
            spec=spec,
        )
    if source == "imagefolder":
        return ImageFolderDataset(
            spec["root"],
            params,
            max_images=spec.get("max_images"),
            seed=int(spec.get("seed", seed)),
            name=name,
            spec=spec,
        )
    raise ValueError(f"{where}.source: expected one of {list(SOURCES)}, got {source!r}")


__all__ = [
    "SOURCES",
    "ImageBatch",
    "ImageDataset",
    "ImageFolderDataset",
    "PreprocessParams",
    "SkippedImage",
    "WorldArrayDataset",
    "load_dataset",
    "transform_batch",
    "transform_pil",
]
