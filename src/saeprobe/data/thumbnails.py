"""Small RGB copies of dataset images (figures, the atlas, the stores' thumbnails.npy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from saeprobe.config import THUMBNAIL_PX
from saeprobe.world.generate import load_split


def thumbnail(image: Image.Image, size: int = THUMBNAIL_PX) -> np.ndarray:
    """uint8 (size, size, 3): the centred square of `image` resized to `size` (bicubic; a large
    image is first shrunk by an integer factor, PIL's reducing_gap, which costs a fraction of a
    full bicubic pass and changes the result by under half a grey level on average)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) / 2, (rgb.height - side) / 2
    box = (left, top, left + side, top + side)
    small = rgb.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)
    return np.asarray(small, dtype=np.uint8)


def thumbnails(
    spec: Mapping, paths: Sequence[str], indices: Sequence[int], size: int = THUMBNAIL_PX
) -> list[np.ndarray]:
    """(size, size, 3) uint8 images of a dataset (world: by dataset index; imagefolder: by the
    image table's relative path, decoding the files again). An unreadable file gives a grey
    square."""
    if spec["source"] == "world":
        images, _ = load_split(spec["root"], spec["split"], mmap=True, columns=())
        return [np.asarray(images[int(i)]) for i in indices]
    out = []
    for rel in paths:
        try:
            with Image.open(Path(spec["root"]) / rel) as image:
                out.append(thumbnail(image, size))
        except OSError:
            out.append(np.full((size, size, 3), 128, dtype=np.uint8))
    return out
