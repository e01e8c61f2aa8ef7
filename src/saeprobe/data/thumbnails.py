"""Small RGB copies of dataset images for figures (top-activating image grids)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from saeprobe.world.generate import load_split


def thumbnails(
    spec: Mapping, paths: Sequence[str], indices: Sequence[int], size: int = 64
) -> list[np.ndarray]:
    """(size, size, 3) uint8 images of a dataset (world: by dataset index; imagefolder: by the
    image table's relative path). An unreadable file gives a grey square."""
    if spec["source"] == "world":
        images, _ = load_split(spec["root"], spec["split"], mmap=True, columns=())
        return [np.asarray(images[int(i)]) for i in indices]
    out = []
    for rel in paths:
        try:
            with Image.open(Path(spec["root"]) / rel) as image:
                thumb = ImageOps.fit(image.convert("RGB"), (size, size))
                out.append(np.asarray(thumb))
        except OSError:
            out.append(np.full((size, size, 3), 128, dtype=np.uint8))
    return out
