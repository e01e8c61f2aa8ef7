"""(image, caption) examples with concept labels: the synthetic world and COCO captions.

`Examples.table` has one row per example: example (0..n-1), source_index (row of the world
split, or the COCO image id), caption, concepts ("|"-joined concept words the image contains)
and the world's label columns (shape, superclass, colour, background) where they exist.
`Examples.attributes` maps every concept word to its attribute (colour, shape, category, ...).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from saeprobe.world.generate import load_split

WORLD_ATTRIBUTES = ("colour", "shape", "superclass", "background")


@dataclass
class Examples:
    """n examples: `image(i)` -> RGB PIL image; table (n rows); attributes {concept: attribute}."""

    table: pd.DataFrame
    attributes: dict[str, str]
    images: Any = None
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def image(self, i: int) -> Image.Image:
        if self.images is not None:
            return Image.fromarray(np.asarray(self.images[i], dtype=np.uint8))
        with Image.open(self.paths[i]) as im:
            return im.convert("RGB")

    def thumbnail(self, i: int, size: int = 64) -> np.ndarray:
        """uint8 (size, size, 3) centre-cropped square thumbnail of example i."""
        im = self.image(i)
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size))
        return np.asarray(im, dtype=np.uint8)


def subset(n_total: int, max_examples: int | None, seed: int, offset: int = 0) -> np.ndarray:
    """Sorted row indices: a seeded permutation of range(n_total), sliced [offset, offset+max)."""
    order = np.random.default_rng(seed).permutation(n_total)
    end = n_total if max_examples is None else offset + max_examples
    if offset >= n_total:
        raise ValueError(f"offset {offset} leaves no examples out of {n_total}")
    return np.sort(order[offset:end])


def world_examples(
    world_dir: str | Path, split: str, max_examples: int | None, seed: int, offset: int = 0
) -> Examples:
    """Examples from a world split; concepts are the image's colour, shape, superclass and
    background (their words; only those that occur in captions can be matched to words)."""
    images, manifest = load_split(world_dir, split, mmap=True)
    rows = subset(len(manifest), max_examples, seed, offset)
    m = manifest.iloc[rows].reset_index(drop=True)
    table = pd.DataFrame(
        {
            "example": np.arange(len(m)),
            "source_index": rows,
            "caption": m["caption"].to_numpy(),
            "concepts": ["|".join(r) for r in m[list(WORLD_ATTRIBUTES)].to_numpy()],
        }
    )
    for a in WORLD_ATTRIBUTES:
        table[a] = m[a].to_numpy()
    attributes = {str(v): a for a in WORLD_ATTRIBUTES for v in sorted(m[a].unique())}
    return Examples(table=table, attributes=attributes, images=np.asarray(images[rows]))


def coco_examples(
    root: str | Path, split: str, max_examples: int | None, seed: int, offset: int = 0
) -> Examples:
    """Examples from COCO `split` (e.g. val2017) under `root` (annotations/ and {split}/).

    One caption per image (the lowest annotation id); concepts: the category and supercategory
    names of the image's instance annotations (multi-word names keep only their last word, the
    word a caption would use, e.g. "traffic light" -> "light").
    """
    root = Path(root)
    with open(root / "annotations" / f"captions_{split}.json") as fh:
        captions = json.load(fh)
    with open(root / "annotations" / f"instances_{split}.json") as fh:
        instances = json.load(fh)
    first: dict[int, tuple[int, str]] = {}
    for ann in captions["annotations"]:
        key = ann["image_id"]
        if key not in first or ann["id"] < first[key][0]:
            first[key] = (ann["id"], ann["caption"].strip())
    files = {im["id"]: im["file_name"] for im in captions["images"]}
    cats = {c["id"]: c for c in instances["categories"]}

    def word(name: str) -> str:
        return name.lower().split()[-1]

    per_image: dict[int, set[str]] = {}
    attributes: dict[str, str] = {}
    for ann in instances["annotations"]:
        c = cats[ann["category_id"]]
        per_image.setdefault(ann["image_id"], set()).update(
            {word(c["name"]), word(c["supercategory"])}
        )
        attributes.setdefault(word(c["name"]), "category")
        attributes.setdefault(word(c["supercategory"]), "supercategory")
    ids = np.array(sorted(first))
    rows = subset(len(ids), max_examples, seed, offset)
    chosen = ids[rows]
    table = pd.DataFrame(
        {
            "example": np.arange(len(chosen)),
            "source_index": chosen,
            "caption": [first[i][1] for i in chosen],
            "concepts": ["|".join(sorted(per_image.get(i, ()))) for i in chosen],
        }
    )
    paths = [root / split / files[i] for i in chosen]
    return Examples(table=table, attributes=attributes, paths=paths)


def load_examples(spec: dict[str, Any], seed: int) -> Examples:
    """Examples of a dataset spec {source: world_pairs|coco, root, split, max_examples, offset}."""
    args = (spec["split"], spec.get("max_examples"), seed, spec.get("offset", 0))
    if spec["source"] == "world_pairs":
        return world_examples(spec["root"], *args)
    if spec["source"] == "coco":
        return coco_examples(spec["root"], *args)
    raise ValueError(f"dataset source: expected world_pairs or coco, got {spec['source']!r}")


def concept_sets(table: pd.DataFrame) -> list[set[str]]:
    return [set(filter(None, str(c).split("|"))) for c in table["concepts"].fillna("")]


def caption_words(captions: Sequence[str]) -> list[str]:
    """Sorted distinct whitespace-separated words of `captions`."""
    return sorted({w for c in captions for w in c.split()})
