"""Small datasets built on disk for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root: Path, with_bad: bool = True) -> Path:
    """Two classes of small random images (JPEG and PNG), plus a truncated JPEG and a text
    file named .JPEG when `with_bad`."""
    rng = np.random.default_rng(0)
    for cls, n in (("n001", 3), ("n002", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            image = Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8))
            ext = "JPEG" if i % 2 == 0 else "png"
            image.save(root / cls / f"img_{i}.{ext}")
    if with_bad:
        good = (root / "n001" / "img_0.JPEG").read_bytes()
        (root / "n001" / "img_1b_truncated.JPEG").write_bytes(good[: len(good) // 2])
        (root / "n002" / "img_0a_text.JPEG").write_text("this is not an image\n")
    return root
