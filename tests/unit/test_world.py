"""The synthetic world: generator, splits, hierarchy file, configs, the tiny CLIP's round trip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from snakemake_run import ROOT

from saeprobe.config import ConfigError, validate_config
from saeprobe.hierarchy import build_hierarchy, read_hierarchy
from saeprobe.world.clip import (
    RESULT_COLUMNS,
    encode_images,
    encode_texts,
    images_to_tensor,
    load_world_clip,
    train_world_clip,
    zero_shot_eval,
)
from saeprobe.world.config import WorldClipConfig, WorldConfig
from saeprobe.world.generate import (
    MANIFEST_COLUMNS,
    distinct_unseen_shapes,
    generate_world,
    load_split,
    render_split,
    shape_mask,
    shape_overlap,
)
from saeprobe.world.shapes import COLOURS

SMALL = {
    "splits": {
        "train": 96,
        "test": 48,
        "ood_shape": 24,
        "ood_texture": 24,
        "shift_outline": 24,
        "shift_noise": 24,
        "ood_near": 24,
        "ood_far": 24,
        "id_fresh": 48,
    }
}
TINY_CLIP = {
    "steps": 3,
    "batch_size": 16,
    "embed_dim": 16,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 2,
    "vision_head_width": 16,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "warmup_steps": 1,
    "device": "cpu",
    "threads": 1,
    "eval_batch_size": 32,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig.from_dict(SMALL), out)
    return out


def test_reading_a_split_imports_neither_torch_nor_open_clip():
    """Table and report jobs read world splits; they must not pay for torch or open_clip."""
    import saeprobe

    src = str(Path(saeprobe.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    code = (
        "import sys; from saeprobe.world.generate import load_split; "
        "heavy = sorted({'open_clip', 'torch'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_generator_is_deterministic_per_seed():
    cfg = WorldConfig.from_dict({**SMALL, "seed": 3})
    a_img, a_man = render_split(cfg, "test")
    b_img, b_man = render_split(cfg, "test")
    np.testing.assert_array_equal(a_img, b_img)
    pd.testing.assert_frame_equal(a_man, b_man)
    c_img, c_man = render_split(WorldConfig.from_dict({**SMALL, "seed": 4}), "test")
    assert not np.array_equal(a_img, c_img)
    assert not a_man["caption"].equals(c_man["caption"])


def test_files_and_formats(world):
    images, manifest = load_split(world, "train")
    assert images.dtype == np.uint8 and images.shape == (96, 32, 32, 3)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert (manifest["index"] == np.arange(96)).all()
    assert (manifest["label"] == "shape:" + manifest["shape"]).all()
    vocab = json.loads((world / "vocab.json").read_text())
    cfg = WorldConfig.from_dict(SMALL)
    assert vocab["shapes"] == list(cfg.shapes)
    assert set(vocab["backgrounds"]) == set(cfg.backgrounds) | set(cfg.ood_backgrounds)
    assert not list(world.rglob("*.tmp"))
    row = manifest.iloc[0]
    assert row["caption"] == f"a {row['colour']} {row['shape']} on a {row['background']} background"


def test_split_contents(world):
    cfg = WorldConfig.from_dict(SMALL)
    held = set(cfg.heldout_shapes)
    _, train = load_split(world, "train")
    _, ood_shape = load_split(world, "ood_shape")
    _, ood_texture = load_split(world, "ood_texture")
    assert not held & set(train["shape"])
    assert set(train["shape"]) == set(cfg.train_shapes)  # balanced: every shape appears
    assert set(ood_shape["shape"]) == held
    assert set(ood_texture["background"]) <= set(cfg.ood_backgrounds)
    assert not set(ood_texture["background"]) & set(train["background"])
    assert set(ood_texture["shape"]) <= set(cfg.train_shapes)
    for split, rendering in [("shift_outline", "outline"), ("shift_noise", "noisy")]:
        _, m = load_split(world, split)
        assert (m["rendering"] == rendering).all()
        assert set(m["shape"]) <= set(cfg.train_shapes)
    assert (train["superclass"] == train["shape"].map(cfg.superclass_of)).all()


def test_ood_control_splits(world):
    """ood_far: only unseen shapes, colours and backgrounds; ood_near: the near-OOD shapes on
    training colours and backgrounds; id_fresh: other images drawn like test."""
    cfg = WorldConfig.from_dict(SMALL)
    _, test = load_split(world, "test")
    _, far = load_split(world, "ood_far")
    _, near = load_split(world, "ood_near")
    fresh_images, fresh = load_split(world, "id_fresh")
    test_images, _ = load_split(world, "test")
    unseen = set(cfg.heldout_shapes) | set(cfg.near_ood_shapes)
    assert set(far["shape"]) == unseen and not unseen & set(cfg.train_shapes)
    assert set(far["colour"]) == set(cfg.ood_colours) and not set(far["colour"]) & set(cfg.colours)
    assert set(far["background"]) == set(cfg.ood_backgrounds)
    assert not set(far["background"]) & set(cfg.backgrounds)
    assert set(near["shape"]) == set(cfg.near_ood_shapes)
    assert set(near["colour"]) == set(cfg.colours)
    assert set(near["background"]) == set(cfg.backgrounds)
    for column, values in [
        ("shape", cfg.train_shapes),
        ("colour", cfg.colours),
        ("background", cfg.backgrounds),
    ]:
        # the same balanced attribute distribution as test: every value equally often (up to one)
        for split in (test, fresh):
            counts = split[column].value_counts()
            assert set(counts.index) == set(values) and counts.max() - counts.min() <= 1
    assert (fresh["rendering"] == "filled").all()
    assert not np.array_equal(fresh_images, test_images)
    assert not fresh["caption"].equals(test["caption"])


def test_near_ood_shapes_follow_the_silhouette_rule():
    """The default near-OOD shapes are exactly the unseen shapes no closer to a training shape
    than training shapes are to each other; the held-out hexagon and ellipse are not."""
    cfg = WorldConfig()
    unseen = ["ellipse", "hexagon", "arrow", "ring", "pentagon", "diamond", "trapezoid"]
    assert sorted(distinct_unseen_shapes(cfg, unseen)) == sorted(cfg.near_ood_shapes)
    assert shape_overlap("hexagon", "circle", cfg) > shape_overlap("arrow", "circle", cfg)
    assert shape_overlap("circle", "circle", cfg) == pytest.approx(1.0)


def test_pixels_match_manifest(world):
    """Re-rendering a shape from its manifest row predicts where the coloured pixels are."""
    cfg = WorldConfig.from_dict(SMALL)
    images, manifest = load_split(world, "test")
    names = list(cfg.colours)
    palette = np.array([COLOURS[c] for c in names], dtype=float)
    for img, row in zip(images, manifest.itertuples(), strict=True):
        mask = shape_mask(row.shape, 32, row.x, row.y, row.size, row.rotation, cfg.supersample)
        inside = img[mask > 0.99].astype(float)
        outside = img[mask < 0.01].astype(float)
        assert len(inside) > 30
        mean = inside.mean(0)
        assert names[np.argmin(((palette - mean) ** 2).sum(1))] == row.colour
        assert np.abs(mean - COLOURS[row.colour]).max() < 50
        # backgrounds are grey: channels agree outside the shape (up to anti-aliased edges)
        assert (np.abs(outside - outside.mean(1, keepdims=True)).max(1) < 1.0).mean() > 0.98
    # an outline covers fewer pixels than the filled shape; noise spreads pixel values
    outline, _ = load_split(world, "shift_outline")
    noisy, _ = load_split(world, "shift_noise")
    grey = lambda x: np.abs(x.astype(float) - x.mean(-1, keepdims=True)).sum(-1) > 30  # noqa: E731
    assert grey(outline).mean() < 0.6 * grey(images).mean()
    assert (
        np.abs(np.diff(noisy.astype(float), axis=2)).mean()
        > 2 * np.abs(np.diff(images.astype(float), axis=2)).mean()
    )


def test_hierarchy_round_trip_and_queries(world):
    cfg = WorldConfig.from_dict(SMALL)
    h = read_hierarchy(world / "hierarchy.tsv")
    assert h == build_hierarchy(cfg.superclasses)
    assert h.root == "entity" and h.parent("entity") is None
    assert set(h.leaves()) == {f"shape:{s}" for s in cfg.shapes}
    assert h.parent("shape:circle") == "super:round"
    assert h.names["super:round"] == "round" and h.names["shape:heart"] == "heart"
    assert h.ancestors("shape:star") == ["shape:star", "super:symbol", "entity"]
    assert h.lowest_common_ancestor(["shape:circle", "shape:crescent"]) == "super:round"
    assert h.lowest_common_ancestor(["shape:circle", "shape:triangle"]) == "entity"
    assert h.lowest_common_ancestor(["shape:star"]) == "shape:star"
    assert h.lowest_common_ancestor(["shape:star", "super:symbol"]) == "super:symbol"
    assert [h.height(n) for n in ("entity", "super:polygon", "shape:square")] == [2, 1, 0]
    assert [h.depth(n) for n in ("entity", "super:polygon", "shape:square")] == [0, 1, 2]
    assert set(h.children("super:polygon")) == {
        f"shape:{s}" for s in dict(cfg.superclasses)["polygon"]
    }
    _, manifest = load_split(world, "ood_shape")
    assert set(manifest["label"]) <= set(h.leaves())


def test_bad_hierarchy_file_names_the_file(tmp_path):
    path = tmp_path / "hierarchy.tsv"
    path.write_text("node\tparent\tname\na\t\ta\nb\t\tb\n")
    with pytest.raises(ValueError, match=r"hierarchy\.tsv.*one root"):
        read_hierarchy(path)
    path.write_text("id\tparent\n")
    with pytest.raises(ValueError, match="header"):
        read_hierarchy(path)


def _validate_with(section: str, raw: dict) -> None:
    """Validate config.yaml with `raw` merged into its `section`."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.setdefault(section, {}).update(raw)
    validate_config(config, ROOT / "schemas" / "config.schema.yaml")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"heldout_shapes": ["circle", "dodecagon"]}, "world.heldout_shapes[1]"),
        (
            {"heldout_shapes": ["circle", "semicircle", "crescent", "ellipse"]},
            "world.heldout_shapes",
        ),
        ({"heldout_shapes": ["ring"]}, "world.heldout_shapes"),
        ({"colours": ["red", "ultraviolet"]}, "world.colours[1]"),
        ({"colours": ["red", "red"]}, "world.colours"),
        ({"ood_backgrounds": ["plain"]}, "world.ood_backgrounds"),
        ({"splits": {"train": 0}}, "world.splits.train"),
        ({"splits": {"validation": 5}}, "world.splits.validation"),
        ({"size_range": [0.4, 0.2]}, "world.size_range"),
        ({"image_size": "32"}, "world.image_size"),
        ({"superclasses": {"round": ["circle"], "also round": ["ring"]}}, "world.superclasses"),
        ({"superclasses": {"a": ["circle"], "b": ["circle", "ring"]}}, "world.superclasses"),
        ({"shapes": ["circle"]}, "world.shapes"),
    ],
)
def test_bad_world_config_names_the_key(raw, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        _validate_with("world", raw)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"vision_width": 64, "vision_head_width": 24}, "world_clip.vision_head_width"),
        ({"text_width": 64, "text_heads": 3}, "world_clip.text_heads"),
        ({"patch_size": 12}, "world_clip.patch_size"),
        ({"lr": -1}, "world_clip.lr"),
        ({"device": "cpu"}, "world_clip.device"),
        ({"caption_colour_p": 1.5}, "world_clip.caption_colour_p"),
        ({"caption_superclass_p": 0.6, "caption_generic_p": 0.6}, "world_clip.caption_generic_p"),
        ({"eval_splits": ["test", "val"]}, "world_clip.eval_splits"),
        ({"depth": 3}, "world_clip.depth"),
    ],
)
def test_bad_clip_config_names_the_key(raw, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        _validate_with("world_clip", raw)


def test_loader_rejects_unknown_world_keys():
    with pytest.raises(ConfigError, match=re.escape("'world.shapes'")):
        WorldConfig.from_dict({"shapes": ["circle"]})
    with pytest.raises(ConfigError, match=re.escape("'world.splits.validation'")):
        WorldConfig.from_dict({"splits": {"validation": 5}})
    with pytest.raises(ConfigError, match=re.escape("'world_clip.depth'")):
        WorldClipConfig.from_dict({"depth": 3})


def test_config_round_trip():
    cfg = WorldConfig.from_dict(SMALL)
    assert WorldConfig.from_dict(cfg.to_dict()) == cfg
    clip = WorldClipConfig.from_dict(TINY_CLIP)
    assert WorldClipConfig.from_dict(clip.to_dict()) == clip


def test_tiny_clip_saves_and_loads_through_open_clip(world, tmp_path):
    cfg = WorldClipConfig.from_dict(TINY_CLIP)
    model, tokenizer, info = train_world_clip(cfg, world, out_dir=tmp_path / "clip")
    assert len(info["losses"]) == 3 and np.isfinite(info["losses"]).all()
    saved = json.loads((tmp_path / "clip" / "open_clip_config.json").read_text())
    assert set(saved) == {"embed_dim", "vision_cfg", "text_cfg"}

    loaded, preprocess, loaded_tok = load_world_clip(tmp_path / "clip", "cpu")
    images, manifest = load_split(world, "test")
    texts = list(manifest["caption"][:5])
    np.testing.assert_array_equal(tokenizer(texts).numpy(), loaded_tok(texts).numpy())
    torch.testing.assert_close(
        encode_images(loaded, images), encode_images(model, images), rtol=0, atol=0
    )
    torch.testing.assert_close(
        encode_texts(loaded, loaded_tok, texts),
        encode_texts(model, tokenizer, texts),
        rtol=0,
        atol=0,
    )
    # the hub-style preprocess is exactly the normalisation used in training
    via_pil = torch.stack([preprocess(Image.fromarray(im)) for im in images[:4]])
    torch.testing.assert_close(via_pil, images_to_tensor(images[:4]), rtol=0, atol=1e-6)

    again, _, _ = train_world_clip(cfg, world)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k

    rows = zero_shot_eval(loaded, loaded_tok, world, ["test", "ood_shape", "ood_texture"])
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    got = set(zip(table["attribute"], table["split"], strict=True))
    assert ("shape", "test") in got and ("colour", "ood_shape") in got
    assert ("superclass", "ood_shape") in got
    assert ("shape", "ood_shape") not in got and ("background", "ood_texture") not in got
    assert table["accuracy"].between(0, 1).all()
    assert np.allclose(table.loc[table["attribute"] == "shape", "chance"], 1 / 9)


def test_too_short_context_names_the_key(world):
    cfg = WorldClipConfig.from_dict({**TINY_CLIP, "context_length": 8})
    with pytest.raises(ValueError, match=r"world_clip\.context_length"):
        train_world_clip(cfg, world)
