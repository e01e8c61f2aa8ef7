"""Typed, validated configs for the synthetic world (`world:`) and its CLIP (`world_clip:`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from saeprobe.config import ConfigError
from saeprobe.world.shapes import COLOURS, SHAPES, TEXTURES

SPLITS: tuple[str, ...] = (
    "train",
    "test",
    "ood_shape",
    "ood_texture",
    "shift_outline",
    "shift_noise",
)

DEFAULT_SUPERCLASSES: dict[str, list[str]] = {
    "round": ["circle", "semicircle", "crescent", "ellipse"],
    "polygon": ["triangle", "square", "rectangle", "hexagon"],
    "symbol": ["star", "cross", "heart", "arrow"],
}


def _err(section: str, key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"config key '{section}.{key}': expected {expected}, got {got!r}")


def _check_unknown(section: str, raw: dict[str, Any], cls: type) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{section}': expected a mapping, got {raw!r}")
    allowed = {f.name for f in fields(cls)}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ConfigError(f"unknown key(s) {extra} in '{section}'; allowed keys: {sorted(allowed)}")


def _int(section: str, key: str, value: Any, lo: int, hi: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < lo
        or (hi is not None and value > hi)
    ):
        bound = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise _err(section, key, bound, value)
    return value


def _float(section: str, key: str, value: Any, lo: float, hi: float | None = None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < lo
        or (hi is not None and value > hi)
    ):
        bound = f"a number >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise _err(section, key, bound, value)
    return float(value)


def _names(section: str, key: str, value: Any, known: list[str] | None) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _err(section, key, "a list of names", value)
    if len(set(value)) != len(value):
        raise _err(section, key, "a list without repeats", value)
    if known is not None:
        bad = [v for v in value if v not in known]
        if bad:
            raise _err(section, key, f"names from {sorted(known)}", bad)
    return tuple(value)


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic image world: shapes in superclasses, colours, textures, splits.

    Superclasses are kept sorted by name (`from_dict`), so the mapping's key order never matters.

    `size_range` is the shape's radius as a fraction of the image size, `position_jitter` the
    largest offset of its centre from the image centre (fraction of the image size), `max_rotation`
    the largest rotation in degrees, `outline_width` and `noise_std` in pixels / grey levels.
    """

    seed: int = 0
    image_size: int = 32
    superclasses: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
        (k, tuple(v)) for k, v in sorted(DEFAULT_SUPERCLASSES.items())
    )
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
    def superclass_of(self) -> dict[str, str]:
        return {s: sup for sup, members in self.superclasses for s in members}

    @property
    def split_sizes(self) -> dict[str, int]:
        return dict(self.splits)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, section: str = "world") -> WorldConfig:
        """Build from the plain config mapping; missing keys take defaults.

        Raises ConfigError naming the key (e.g. `world.heldout_shapes`) and what was expected.
        """
        raw = dict(raw or {})
        _check_unknown(section, raw, cls)
        d = cls()
        kw: dict[str, Any] = {}
        kw["seed"] = _int(section, "seed", raw.get("seed", d.seed), 0)
        kw["image_size"] = _int(section, "image_size", raw.get("image_size", d.image_size), 16, 512)
        sup = raw.get("superclasses", {k: list(v) for k, v in d.superclasses})
        if not isinstance(sup, dict) or len(sup) < 2:
            raise _err(section, "superclasses", "a mapping of >= 2 superclass names to shapes", sup)
        bad_names = [n for n in sup if not isinstance(n, str) or not n.isidentifier()]
        if bad_names:
            raise _err(section, "superclasses", "superclass names that are plain words", bad_names)
        supers = []
        for name, members in sorted(sup.items()):  # key order in the config file is irrelevant
            key = f"superclasses.{name}"
            supers.append((name, _names(section, key, members, sorted(SHAPES))))
            if not members:
                raise _err(section, key, "a non-empty list of shapes", members)
        all_shapes = [s for _, m in supers for s in m]
        if len(set(all_shapes)) != len(all_shapes):
            raise _err(section, "superclasses", "each shape in exactly one superclass", sup)
        kw["superclasses"] = tuple(supers)
        held = _names(
            section, "heldout_shapes", raw.get("heldout_shapes", list(d.heldout_shapes)), all_shapes
        )
        for name, members in supers:
            if all(m in held for m in members):
                raise _err(
                    section, "heldout_shapes", f"at least one training shape left in '{name}'", held
                )
        kw["heldout_shapes"] = held
        kw["colours"] = _names(
            section, "colours", raw.get("colours", list(d.colours)), sorted(COLOURS)
        )
        if len(kw["colours"]) < 2:
            raise _err(section, "colours", "at least 2 colours", kw["colours"])
        kw["backgrounds"] = _names(
            section, "backgrounds", raw.get("backgrounds", list(d.backgrounds)), list(TEXTURES)
        )
        if not kw["backgrounds"]:
            raise _err(section, "backgrounds", "at least 1 background", kw["backgrounds"])
        kw["ood_backgrounds"] = _names(
            section,
            "ood_backgrounds",
            raw.get("ood_backgrounds", list(d.ood_backgrounds)),
            list(TEXTURES),
        )
        overlap = sorted(set(kw["ood_backgrounds"]) & set(kw["backgrounds"]))
        if overlap or not kw["ood_backgrounds"]:
            raise _err(
                section,
                "ood_backgrounds",
                "at least one texture, none of them in world.backgrounds",
                list(kw["ood_backgrounds"]),
            )
        sr = raw.get("size_range", list(d.size_range))
        if (
            not isinstance(sr, list | tuple)
            or len(sr) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in sr)
            or not 0.05 <= sr[0] <= sr[1] <= 0.5
        ):
            raise _err(section, "size_range", "[min, max] with 0.05 <= min <= max <= 0.5", sr)
        kw["size_range"] = (float(sr[0]), float(sr[1]))
        kw["position_jitter"] = _float(
            section, "position_jitter", raw.get("position_jitter", d.position_jitter), 0.0, 0.5
        )
        kw["max_rotation"] = _float(
            section, "max_rotation", raw.get("max_rotation", d.max_rotation), 0.0, 180.0
        )
        kw["colour_jitter"] = _float(
            section, "colour_jitter", raw.get("colour_jitter", d.colour_jitter), 0.0, 64.0
        )
        kw["outline_width"] = _float(
            section, "outline_width", raw.get("outline_width", d.outline_width), 0.5, 8.0
        )
        kw["noise_std"] = _float(section, "noise_std", raw.get("noise_std", d.noise_std), 0.0)
        kw["supersample"] = _int(
            section, "supersample", raw.get("supersample", d.supersample), 1, 8
        )
        splits = raw.get("splits", dict(d.splits))
        if not isinstance(splits, dict):
            raise _err(
                section, "splits", f"a mapping from split names {list(SPLITS)} to sizes", splits
            )
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise _err(section, "splits", f"split names from {list(SPLITS)}", unknown)
        sizes = dict(d.splits)
        for name, n in splits.items():
            sizes[name] = _int(section, f"splits.{name}", n, 1)
        kw["splits"] = tuple((s, sizes[s]) for s in SPLITS)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping that `from_dict` reads back to an equal config."""
        return {
            "seed": self.seed,
            "image_size": self.image_size,
            "superclasses": {k: list(v) for k, v in self.superclasses},
            "heldout_shapes": list(self.heldout_shapes),
            "colours": list(self.colours),
            "backgrounds": list(self.backgrounds),
            "ood_backgrounds": list(self.ood_backgrounds),
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
class WorldClipConfig:
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

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, section: str = "world_clip") -> WorldClipConfig:
        """Build from the plain config mapping; missing keys take defaults.

        Raises ConfigError naming the key (e.g. `world_clip.patch_size`) and what was expected.
        """
        raw = dict(raw or {})
        _check_unknown(section, raw, cls)
        d = cls()
        kw: dict[str, Any] = {}
        ints = {
            "seed": 0,
            "threads": 1,
            "embed_dim": 1,
            "patch_size": 1,
            "vision_width": 8,
            "vision_layers": 1,
            "vision_head_width": 4,
            "text_width": 8,
            "text_layers": 1,
            "text_heads": 1,
            "context_length": 8,
            "steps": 1,
            "batch_size": 2,
            "warmup_steps": 0,
            "eval_batch_size": 1,
        }
        for key, lo in ints.items():
            kw[key] = _int(section, key, raw.get(key, getattr(d, key)), lo)
        kw["lr"] = _float(section, "lr", raw.get("lr", d.lr), 0.0, 1.0)
        probs = (
            "caption_colour_p",
            "caption_background_p",
            "caption_superclass_p",
            "caption_generic_p",
            "caption_photo_p",
        )
        for key in ("min_lr_ratio", "weight_decay", *probs):
            kw[key] = _float(section, key, raw.get(key, getattr(d, key)), 0.0, 1.0)
        device = raw.get("device", d.device)
        if not isinstance(device, str) or not (
            device in ("auto", "cpu") or device.startswith("cuda")
        ):
            raise _err(section, "device", "'auto', 'cpu' or 'cuda[:N]'", device)
        kw["device"] = device
        if kw["caption_superclass_p"] + kw["caption_generic_p"] > 1:
            raise _err(
                section,
                "caption_generic_p",
                "a probability with caption_superclass_p + caption_generic_p <= 1",
                kw["caption_generic_p"],
            )
        if kw["vision_width"] % kw["vision_head_width"]:
            raise _err(
                section,
                "vision_head_width",
                f"a divisor of world_clip.vision_width ({kw['vision_width']})",
                kw["vision_head_width"],
            )
        if kw["text_width"] % kw["text_heads"]:
            raise _err(
                section,
                "text_heads",
                f"a divisor of world_clip.text_width ({kw['text_width']})",
                kw["text_heads"],
            )
        kw["eval_splits"] = _names(
            section, "eval_splits", raw.get("eval_splits", list(d.eval_splits)), list(SPLITS)
        )
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["eval_splits"] = list(self.eval_splits)
        return out
