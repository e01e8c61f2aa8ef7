"""Render the synthetic world's splits: images, manifests, hierarchy and vocabulary files."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

from saeprobe.hierarchy import build_hierarchy, write_hierarchy
from saeprobe.io import atomic_save_npy, atomic_write_csv, atomic_write_json
from saeprobe.world.config import SPLITS, WorldConfig
from saeprobe.world.shapes import COLOURS, SHAPES, texture

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "index",
    "label",
    "shape",
    "superclass",
    "colour",
    "background",
    "size",
    "x",
    "y",
    "rotation",
    "rendering",
    "caption",
)


def caption(colour: str, shape: str, background: str) -> str:
    """The manifest caption of an image, e.g. "a red triangle on a striped background"."""
    return f"a {colour} {shape} on a {background} background"


def shape_mask(
    shape: str,
    image_size: int,
    x: float,
    y: float,
    radius: float,
    rotation: float,
    supersample: int = 4,
    outline_width: float | None = None,
) -> np.ndarray:
    """Anti-aliased coverage of one shape: (image_size, image_size) float32 in [0, 1].

    (x, y) is the centre in pixels, `radius` the scale in pixels, `rotation` in degrees
    (counter-clockwise); with `outline_width` (pixels) only a band inside the border is drawn.
    """
    s = supersample
    canvas = Image.new("L", (image_size * s, image_size * s), 0)
    draw = ImageDraw.Draw(canvas)
    t = np.deg2rad(rotation)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    for poly, fill in SHAPES[shape]:
        pts = (poly @ rot.T * radius + [x, y]) * s - 0.5
        draw.polygon(pts.ravel().tolist(), fill=255 * fill)
    if outline_width is not None:
        full = np.asarray(canvas)
        band = full - _erode(full, max(1, round(outline_width * s)))
        canvas = Image.fromarray(band)
    small = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Grey erosion by a (2r+1)^2 square, separable; border counts as 0: (H, W) -> (H, W)."""
    out = mask
    for axis in (0, 1):
        padded = np.pad(out, [(r, r) if a == axis else (0, 0) for a in (0, 1)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1, axis=axis)
        out = windows.min(axis=-1)
    return out


def _balanced(rng: np.random.Generator, options: tuple[str, ...], n: int) -> np.ndarray:
    """`n` draws that use every option equally often (up to one), in random order."""
    return rng.permutation(np.resize(np.array(options, dtype=object), n))


@dataclass(frozen=True)
class SplitSpec:
    """What a split draws from; rendering in filled|outline|noisy."""

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    backgrounds: tuple[str, ...]
    rendering: str


def split_spec(cfg: WorldConfig, split: str) -> SplitSpec:
    """The shapes, colours, backgrounds and rendering of one split (test and id_fresh: train's)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    shapes, colours, backgrounds = cfg.train_shapes, cfg.colours, cfg.backgrounds
    if split == "ood_shape":
        shapes = cfg.heldout_shapes
    if split == "ood_near":
        shapes = cfg.near_ood_shapes
    if split == "ood_texture":
        backgrounds = cfg.ood_backgrounds
    if split == "ood_far":
        shapes, colours, backgrounds = cfg.unseen_shapes, cfg.ood_colours, cfg.ood_backgrounds
    rendering = {"shift_outline": "outline", "shift_noise": "noisy"}.get(split, "filled")
    return SplitSpec(shapes, colours, backgrounds, rendering)


def shape_overlap(a: str, b: str, cfg: WorldConfig, size: int = 64, n_rotations: int = 11) -> float:
    """Best intersection-over-union of two shapes' masks, centred at the mean radius, over
    pairs of rotations within +-max_rotation: how confusable their silhouettes are."""
    radius = size * (cfg.size_range[0] + cfg.size_range[1]) / 2
    angles = np.linspace(-cfg.max_rotation, cfg.max_rotation, n_rotations)

    def masks(s: str) -> np.ndarray:
        return np.stack([shape_mask(s, size, size / 2, size / 2, radius, r) for r in angles])

    ma, mb = masks(a)[:, None], masks(b)[None]
    iou = np.minimum(ma, mb).sum(axis=(2, 3)) / np.maximum(ma, mb).sum(axis=(2, 3))
    return float(iou.max())


def distinct_unseen_shapes(cfg: WorldConfig, candidates: Sequence[str]) -> list[str]:
    """The candidates (shapes not trained on) whose overlap with their nearest training shape is
    below the median overlap of a training shape with its nearest other training shape: shapes
    no more confusable with the training set than its own classes are with one another."""
    train = cfg.train_shapes
    nearest_train = [max(shape_overlap(s, t, cfg) for t in train if t != s) for s in train]
    bar = float(np.median(nearest_train))
    return [s for s in candidates if max(shape_overlap(s, t, cfg) for t in train) < bar]


def render_split(cfg: WorldConfig, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Render one split deterministically from (cfg.seed, split).

    Returns images uint8 (n, image_size, image_size, 3) and the manifest (MANIFEST_COLUMNS).
    """
    n = cfg.split_sizes[split]
    size = cfg.image_size
    spec = split_spec(cfg, split)
    rendering = spec.rendering
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    shape_col = _balanced(rng, spec.shapes, n)
    colour_col = _balanced(rng, spec.colours, n)
    bg_col = _balanced(rng, spec.backgrounds, n)
    radius = rng.uniform(*cfg.size_range, n) * size
    offset = rng.uniform(-cfg.position_jitter, cfg.position_jitter, (n, 2)) * size
    centre = size / 2 + offset
    rotation = rng.uniform(-cfg.max_rotation, cfg.max_rotation, n)
    jitter = rng.normal(0.0, cfg.colour_jitter, (n, 3))
    sup = cfg.superclass_of
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    outline = cfg.outline_width if rendering == "outline" else None
    for i in tqdm(range(n), desc=f"world {split}", mininterval=2.0):
        bg = texture(bg_col[i], size, rng)
        mask = shape_mask(
            shape_col[i],
            size,
            centre[i, 0],
            centre[i, 1],
            radius[i],
            rotation[i],
            cfg.supersample,
            outline,
        )[..., None]
        colour = np.clip(np.array(COLOURS[colour_col[i]], np.float32) + jitter[i], 0, 255)
        img = bg[..., None] * (1.0 - mask) + colour * mask
        if rendering == "noisy":
            img = img + rng.normal(0.0, cfg.noise_std, img.shape)
        images[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    manifest = pd.DataFrame(
        {
            "index": np.arange(n),
            "label": [f"shape:{s}" for s in shape_col],
            "shape": shape_col.astype(str),
            "superclass": [sup.get(s, "none") for s in shape_col],
            "colour": colour_col.astype(str),
            "background": bg_col.astype(str),
            "size": np.round(radius, 3),
            "x": np.round(centre[:, 0], 3),
            "y": np.round(centre[:, 1], 3),
            "rotation": np.round(rotation, 2),
            "rendering": rendering,
            "caption": [
                caption(c, s, b) for c, s, b in zip(colour_col, shape_col, bg_col, strict=True)
            ],
        },
        columns=list(MANIFEST_COLUMNS),
    )
    return images, manifest


def vocab(cfg: WorldConfig) -> dict:
    """The world's vocabulary as written to `vocab.json`."""
    return {
        "shapes": list(cfg.shapes),
        "superclasses": {k: list(v) for k, v in cfg.superclasses},
        "colours": list(cfg.colours),
        "backgrounds": list(cfg.backgrounds) + list(cfg.ood_backgrounds),
        "train_shapes": list(cfg.train_shapes),
        "heldout_shapes": list(cfg.heldout_shapes),
        "train_backgrounds": list(cfg.backgrounds),
        "ood_backgrounds": list(cfg.ood_backgrounds),
        "near_ood_shapes": list(cfg.near_ood_shapes),
        "ood_colours": list(cfg.ood_colours),
    }


def generate_world(cfg: WorldConfig, out_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> None:
    """Write every split plus `hierarchy.tsv` and `vocab.json` under `out_dir`.

    Layout: `{out_dir}/{split}/images.npy` (uint8 N,H,W,3), `{out_dir}/{split}/manifest.csv`.
    Each file is written under a temporary name and renamed when complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        images, manifest = render_split(cfg, split)
        d = out_dir / split
        d.mkdir(exist_ok=True)
        images_file, manifest_file = split_files(out_dir, split)
        atomic_save_npy(images_file, images)
        atomic_write_csv(manifest_file, manifest)
        log.info("world split %s: %d images -> %s", split, len(manifest), d)
    write_hierarchy(
        build_hierarchy(cfg.superclasses, supergroups=cfg.supergroups), out_dir / "hierarchy.tsv"
    )
    atomic_write_json(out_dir / "vocab.json", vocab(cfg), sort_keys=False)


def split_files(world_dir: str | Path, split: str) -> tuple[Path, Path]:
    """(images.npy, manifest.csv) of one split: the world's only statement of its layout."""
    d = Path(world_dir) / split
    return d / "images.npy", d / "manifest.csv"


def load_split(
    world_dir: str | Path,
    split: str,
    mmap: bool = False,
    columns: Sequence[str] = MANIFEST_COLUMNS,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Read one split: images uint8 (N, H, W, 3) and its manifest (N rows), checked to hold
    `columns` (all of MANIFEST_COLUMNS by default; a reader may need fewer)."""
    d = Path(world_dir) / split
    img_path, man_path = split_files(world_dir, split)
    for p in (img_path, man_path):
        if not p.is_file():
            raise FileNotFoundError(f"world split {split!r}: missing {p}")
    images = np.load(img_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    manifest = pd.read_csv(man_path, keep_default_na=False)
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"{man_path}: missing columns {missing}; expected {list(columns)}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{img_path}: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    if len(images) != len(manifest):
        raise ValueError(f"{d}: {len(images)} images but {len(manifest)} manifest rows")
    return images, manifest


def load_vocab(world_dir: str | Path) -> dict:
    """Read `{world_dir}/vocab.json`."""
    with open(Path(world_dir) / "vocab.json") as fh:
        return json.load(fh)
