"""Thumbnails shared by every SAE that reads a dataset: sprite sheets written once per dataset.

A dataset's thumbnails go into `{out}/media/{dataset}_{k}.png` (or `.jpg`), sheets of up to
`PER_SHEET` square thumbnails (`SHEET_COLUMNS` a row), and `{out}/media/{dataset}.js`, which
registers `ATLAS_MEDIA[dataset] = {size, sheets, slots: {example index: [sheet, column, row]}}`
for the pages (a script, not JSON, so a page opened from the file system can load it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SHEET_COLUMNS = 32
PER_SHEET = SHEET_COLUMNS * 32


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (s, s, 3) uint8 with s = min(size, h): a centre crop, downsized."""
    image = np.asarray(image, dtype=np.uint8)
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = image[top : top + side, left : left + side]
    if side <= size:
        return square
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))


def write_media(
    out_dir: str | Path,
    dataset: str,
    thumbs: Mapping[int, np.ndarray],
    size: int,
    image_format: str = "png",
) -> dict:
    """Write the sprite sheets and the media script of `dataset` (see the module docstring).

    thumbs: {example index: (h, w, 3) uint8 image}, each cut to one square size (`fit`).
    image_format: png (lossless) or jpeg (quality 85; photographs take a fraction of the
    space). Returns the registered record."""
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"atlas.thumbnail_format: expected png or jpeg, got {image_format!r}")
    out = Path(out_dir) / "media"
    out.mkdir(parents=True, exist_ok=True)
    indices = sorted(thumbs)
    side = min((min(np.asarray(thumbs[i]).shape[:2]) for i in indices), default=size)
    side = min(side, size)
    sheets: list[str] = []
    slots: dict[str, list[int]] = {}
    for s, a in enumerate(range(0, len(indices), PER_SHEET)):
        part = indices[a : a + PER_SHEET]
        cols = min(SHEET_COLUMNS, len(part))
        rows = -(-len(part) // SHEET_COLUMNS)
        sheet = np.zeros((rows * side, cols * side, 3), np.uint8)
        for k, index in enumerate(part):
            r, c = divmod(k, SHEET_COLUMNS)
            sheet[r * side : (r + 1) * side, c * side : (c + 1) * side] = fit(thumbs[index], side)
            slots[str(index)] = [s, c, r]
        if image_format == "png":
            name = f"{dataset}_{s}.png"
            Image.fromarray(sheet).save(out / name, compress_level=3)
        else:
            name = f"{dataset}_{s}.jpg"
            Image.fromarray(sheet).save(out / name, quality=85)
        sheets.append(name)
    record = {"size": side, "sheets": sheets, "slots": slots}
    script = f"(window.ATLAS_MEDIA = window.ATLAS_MEDIA || {{}})[{json.dumps(dataset)}] = "
    (out / f"{dataset}.js").write_text(script + json.dumps(record, separators=(",", ":")) + ";\n")
    return record


def strip_sheet(strips: Sequence[np.ndarray], out: str | Path) -> int:
    """One PNG of steering strips, a row each: strips are (strengths, h, w, 3) uint8 arrays of
    one shape. Returns the tile size (h)."""
    grid = np.concatenate([np.concatenate(list(s), axis=1) for s in strips], axis=0)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(grid, dtype=np.uint8)).save(out, compress_level=3)
    return int(strips[0].shape[1])
