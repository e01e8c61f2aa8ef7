"""Typed configs for the synthetic world (`world:`) and its CLIP (`world_clip:`).

The schema defines every key's type, range and default; `saeprobe.config.check_references`
checks the rules between keys (each shape in one superclass, held-out shapes leave every
superclass a training shape, ...) before any job runs. `from_dict` is `saeprobe.config.
load_section`; the dataclass defaults serve library use and equal the schema's (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from saeprobe.config import ConfigError, FromConfig

SPLITS: tuple[str, ...] = (
    "train",
    "test",
    "ood_shape",
    "ood_texture",
    "shift_outline",
    "shift_noise",
    "ood_near",
    "ood_far",
    "id_fresh",
)

DEFAULT_SUPERCLASSES: dict[str, list[str]] = {
    "round": ["circle", "semicircle", "crescent", "ellipse"],
    "polygon": ["triangle", "square", "rectangle", "hexagon"],
    "symbol": ["star", "cross", "heart", "arrow"],
}


@dataclass(frozen=True)
class WorldConfig(FromConfig):
    """The synthetic image world: shapes in superclasses, colours, textures, splits.

    Superclasses (and the optional `supergroups`, a level of superclasses above them in the
    hierarchy) are kept sorted by name (`from_dict`), so the mapping's key order never matters;
    splits are kept in `SPLITS` order, the ones a mapping leaves out at their default size.

    `size_range` is the shape's radius as a fraction of the image size, `position_jitter` the
    largest offset of its centre from the image centre (fraction of the image size), `max_rotation`
    the largest rotation in degrees, `outline_width` and `noise_std` in pixels / grey levels.

    OOD splits: `ood_shape` draws the held-out shapes (reported as the confusable near-OOD set),
    `ood_texture` the OOD backgrounds, `ood_near` the `near_ood_shapes` (unseen shapes no closer
    to a training shape than training shapes are to each other, `generate.shape_overlap`) on
    training colours and backgrounds, `ood_far` every unseen shape in `ood_colours` on the OOD
    backgrounds; `id_fresh` is a second in-distribution sample drawn like `test`.
    """

    seed: int = 0
    image_size: int = 32
    superclasses: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
        (k, tuple(v)) for k, v in sorted(DEFAULT_SUPERCLASSES.items())
    )
    supergroups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    heldout_shapes: tuple[str, ...] = ("ellipse", "hexagon", "arrow")
    colours: tuple[str, ...] = (
        "red",
        "orange",
        "yellow",
        "green",
        "cyan",
        "blue",
        "purple",
        "pink",
    )
    backgrounds: tuple[str, ...] = ("plain", "striped", "dotted")
    ood_backgrounds: tuple[str, ...] = ("checker", "grid")
    near_ood_shapes: tuple[str, ...] = ("arrow", "diamond", "ring", "trapezoid")
    ood_colours: tuple[str, ...] = ("white", "brown")
    size_range: tuple[float, float] = (0.3, 0.42)
    position_jitter: float = 0.1
    max_rotation: float = 25.0
    colour_jitter: float = 12.0
    outline_width: float = 1.5
    noise_std: float = 60.0
    supersample: int = 4
    splits: tuple[tuple[str, int], ...] = (
        ("train", 20000),
        ("test", 2000),
        ("ood_shape", 1000),
        ("ood_texture", 1000),
        ("shift_outline", 1000),
        ("shift_noise", 1000),
        ("ood_near", 1000),
        ("ood_far", 1000),
        ("id_fresh", 1000),
    )

    @property
    def shapes(self) -> tuple[str, ...]:
        """All shapes, held-out ones included, in superclass order."""
        return tuple(s for _, members in self.superclasses for s in members)

    @property
    def train_shapes(self) -> tuple[str, ...]:
        """Shapes seen in train/test/shift splits (all shapes minus the held-out ones)."""
        return tuple(s for s in self.shapes if s not in self.heldout_shapes)

    @property
    def unseen_shapes(self) -> tuple[str, ...]:
        """Shapes never trained on: the held-out ones, then the near-OOD ones not among them."""
        extra = tuple(s for s in self.near_ood_shapes if s not in self.heldout_shapes)
        return (*self.heldout_shapes, *extra)

    @property
    def superclass_of(self) -> dict[str, str]:
        return {s: sup for sup, members in self.superclasses for s in members}

    @property
    def split_sizes(self) -> dict[str, int]:
        return dict(self.splits)

    config_key = "world"

    @classmethod
    def _from_section(cls, values: dict[str, Any], key: str) -> dict[str, Any]:
        """Mappings to the tuple fields: superclasses sorted by name, splits in SPLITS order."""
        values = dict(values)
        for tree_key in ("superclasses", "supergroups"):
            if isinstance(values.get(tree_key), dict):
                values[tree_key] = sorted(values[tree_key].items())
        if isinstance(values.get("splits"), dict):
            unknown = sorted(set(values["splits"]) - set(SPLITS))
            if unknown:
                raise ConfigError(
                    f"unknown key(s) {[f'{key}.splits.{s}' for s in unknown]} in "
                    f"'{key}.splits'; allowed keys: {list(SPLITS)}"
                )
            sizes = {**dict(cls.splits), **values["splits"]}
            values["splits"] = [(s, sizes[s]) for s in SPLITS]
        return values

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping that `from_dict` reads back to an equal config."""
        return {
            "seed": self.seed,
            "image_size": self.image_size,
            "superclasses": {k: list(v) for k, v in self.superclasses},
            "supergroups": {k: list(v) for k, v in self.supergroups},
            "heldout_shapes": list(self.heldout_shapes),
            "colours": list(self.colours),
            "backgrounds": list(self.backgrounds),
            "ood_backgrounds": list(self.ood_backgrounds),
            "near_ood_shapes": list(self.near_ood_shapes),
            "ood_colours": list(self.ood_colours),
            "size_range": list(self.size_range),
            "position_jitter": self.position_jitter,
            "max_rotation": self.max_rotation,
            "colour_jitter": self.colour_jitter,
            "outline_width": self.outline_width,
            "noise_std": self.noise_std,
            "supersample": self.supersample,
            "splits": dict(self.splits),
        }


@dataclass(frozen=True)
class WorldClipConfig(FromConfig):
    """A tiny open_clip CLIP (ViT image tower, causal text transformer) and how to train it.

    Caption probabilities: each training step re-captions every image from its attributes,
    naming its colour with `caption_colour_p`, its background with `caption_background_p`,
    its superclass instead of its shape with `caption_superclass_p`, only "shape" with
    `caption_generic_p` (when colour or background is named), and prefixing
    "a photo of" with `caption_photo_p`.
    """

    seed: int = 0
    device: str = "auto"
    threads: int = 2
    embed_dim: int = 64
    patch_size: int = 16
    vision_width: int = 64
    vision_layers: int = 3
    vision_head_width: int = 32
    text_width: int = 64
    text_layers: int = 1
    text_heads: int = 4
    context_length: int = 16
    steps: int = 1000
    batch_size: int = 256
    lr: float = 4e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.05
    caption_colour_p: float = 0.8
    caption_background_p: float = 0.8
    caption_superclass_p: float = 0.1
    caption_generic_p: float = 0.1
    caption_photo_p: float = 0.3
    eval_splits: tuple[str, ...] = (
        "test",
        "ood_shape",
        "ood_texture",
        "shift_outline",
        "shift_noise",
    )
    eval_batch_size: int = 512

    config_key = "world_clip"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["eval_splits"] = list(self.eval_splits)
        return out
