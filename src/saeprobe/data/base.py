"""The dataset interface shared by every image source."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from saeprobe.data.preprocess import PreprocessParams


@dataclass(frozen=True)
class SkippedImage:
    """An image that could not be read: its dataset index, file and the error."""

    index: int
    path: str
    error: str

    def to_dict(self) -> dict:
        return {"index": self.index, "path": self.path, "error": self.error}


@dataclass
class ImageBatch:
    """A batch of images ready for a backbone.

    indices: (batch,) int64 dataset indices of the images that were read.
    images: (batch, 3, H, W) uint8, already resized and center-cropped.
    skipped: images of the requested range that could not be read.
    thumbnails: (batch, px, px, 3) uint8 small copies of the images read, from a dataset asked
        for them (`ImageFolderDataset.thumbnail_px`); else None.
    """

    indices: np.ndarray
    images: torch.Tensor
    skipped: list[SkippedImage] = field(default_factory=list)
    thumbnails: np.ndarray | None = None


class ImageDataset(ABC):
    """A fixed, ordered list of labelled images.

    `manifest` has one row per image with at least the columns `index` and `label`.
    """

    name: str
    spec: dict
    params: PreprocessParams
    manifest: pd.DataFrame

    def __len__(self) -> int:
        return len(self.manifest)

    def labels(self) -> list[str]:
        """The label of every image, by dataset index."""
        return self.manifest["label"].astype(str).tolist()

    @abstractmethod
    def iter_batches(
        self,
        ranges: Sequence[tuple[int, int]],
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch: bool = True,
    ) -> Iterator[ImageBatch]:
        """Yield one `ImageBatch` per `[start, stop)` range, in order.

        Unreadable images are left out of `images` and listed in `skipped`. `pin_memory` pins
        the image tensors (for CUDA); `prefetch` lets a source read ahead in a background
        thread (worth it when the model runs on an accelerator, not when it needs every core).
        """

    def describe(self) -> dict:
        """What goes into the activation store's metadata about this dataset."""
        return {"name": self.name, "spec": self.spec, "n_images": len(self)}
