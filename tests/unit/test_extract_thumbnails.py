"""Thumbnails made at extraction for image folders: content, resume, and the atlas reading them."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from snakemake_run import ROOT
from tiny_backbones import save_tiny_open_clip, single_thread, write_world_split
from tiny_data import make_image_folder

from saeprobe.activations import ActivationStore, extract
from saeprobe.atlas.build import AtlasSae, AtlasSettings, build_atlas, dataset_thumbnails
from saeprobe.config import ConfigError, thumbnail_stores, validate_config
from saeprobe.data.thumbnails import thumbnail
from saeprobe.eval.features import ModelSites, load_site, sae_codes
from saeprobe.eval.semantics import grid_latents, semantics_grid, top_images
from saeprobe.sae.config import SAEConfig
from saeprobe.sae.io import save_sae
from saeprobe.sae.models import build_sae

PX = 64
GREY = 128


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("model")
    save_tiny_open_clip(root / "clip")
    return {
        "source": "world",
        "weights": str(root / "clip"),
        "layers": [1],
        "tokens": ["cls"],
        "pooled": False,
    }


def _folder(root: Path) -> dict:
    """7 files in 2 classes: 5 readable images (JPEG and PNG) and 2 unreadable ones."""
    return {"source": "imagefolder", "root": str(make_image_folder(root))}


def _run(dataset: dict, model: dict, out: Path, **kwargs) -> dict:
    settings = {"batch_size": 3, "shard_examples": 4, "device": "cpu", "progress": False}
    return extract(dataset, model, out, **{**settings, **kwargs})


def _file_thumbnails(dataset: dict, examples: pd.DataFrame) -> dict[int, np.ndarray | None]:
    """{example index: thumbnail of its file decoded now, None when the file is unreadable}."""
    out = {}
    for index, rel in zip(examples["index"], examples["path"], strict=True):
        try:
            with Image.open(Path(dataset["root"]) / rel) as image:
                out[int(index)] = thumbnail(image, PX)
        except OSError:
            out[int(index)] = None
    return out


def _tree(path: Path) -> dict[str, bytes]:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


def test_thumbnails_match_the_files_one_per_example(model: dict, tmp_path: Path) -> None:
    dataset = _folder(tmp_path / "imgs")
    result = _run(dataset, model, tmp_path / "acts", thumbnail_px=PX)
    store = ActivationStore(tmp_path / "acts" / "L1_cls")
    examples = store.examples()
    thumbs = store.thumbnails()
    assert thumbs.shape == (len(examples), PX, PX, 3) == (7, PX, PX, 3) and thumbs.dtype == np.uint8
    assert result["n_examples"] == 5 and result["n_skipped"] == 2
    stored = set(np.asarray(store.example_index()).tolist())
    expected = _file_thumbnails(dataset, examples)
    for position, index in enumerate(examples["index"]):
        if expected[int(index)] is None:
            assert index not in stored and (thumbs[position] == GREY).all()
        else:
            np.testing.assert_array_equal(thumbs[position], expected[int(index)])
    assert store.metadata["settings"]["thumbnail_px"] == PX
    assert not list((tmp_path / "acts").glob("thumbnails_*.npy"))  # shard files are gone


def test_atlas_reads_them_after_the_image_files_are_gone(model: dict, tmp_path: Path) -> None:
    dataset = _folder(tmp_path / "imgs")
    store_dir = tmp_path / "acts"
    _run(dataset, model, store_dir, thumbnail_px=PX)
    store = ActivationStore(store_dir / "L1_cls")
    expected = _file_thumbnails(dataset, store.examples())
    shutil.rmtree(dataset["root"])  # from here on, a decode of any file would fail
    shown = sorted(np.unique(store.example_index()).tolist())
    thumbs = dataset_thumbnails(store, dataset, shown, PX)
    for i in shown:
        np.testing.assert_array_equal(thumbs[i], expected[i])
    out = tmp_path / "atlas"
    build_atlas([_atlas_sae(tmp_path, store_dir, dataset)], {}, out, AtlasSettings(), "a test")
    record = json.loads((out / "media/imgs.js").read_text().split("] = ", 1)[1].rstrip(";\n"))
    assert record["slots"] and record["size"] == PX
    sheet = np.asarray(Image.open(out / "media" / record["sheets"][0]))
    for index, (_, col, row) in record["slots"].items():
        tile = sheet[row * PX : (row + 1) * PX, col * PX : (col + 1) * PX]
        np.testing.assert_array_equal(tile, expected[int(index)])  # png sheets are lossless


def test_semantics_grids_read_them_after_the_image_files_are_gone(
    model: dict, tmp_path: Path
) -> None:
    dataset = _folder(tmp_path / "imgs")
    store_dir = tmp_path / "acts" / "clip" / "imgs"
    _run(dataset, model, store_dir, thumbnail_px=PX)
    expected = _file_thumbnails(dataset, ActivationStore(store_dir / "L1_cls").examples())
    shutil.rmtree(dataset["root"])
    sae_dir = tmp_path / "saes" / "clip" / "L1_cls" / "s"
    _atlas_sae(tmp_path, store_dir, dataset, sae_dir)
    sites = ModelSites("clip", ["L1_cls"], ["s"], tmp_path / "acts", tmp_path / "saes")
    data = load_site(store_dir, "L1_cls")
    sae = sites.load_sae("L1_cls", "s", torch.device("cpu"))
    codes = sae_codes(sae, data, latents=np.arange(8))
    top = top_images(codes, 4, positive_only=True)
    fires = top.valid.sum(axis=1)
    assert fires.max() > 0
    table = pd.DataFrame(
        {"site": "L1_cls", "features": "s", "latent": range(8), "name": "circle"}
        | {"name_score": fires / fires.max(), "purity": 0.5}
    )
    panels = semantics_grid(sites, "imgs", table, dataset, "s", 3, 4, torch.device("cpu"))
    rows = panels[0][1]
    assert len(rows) == 3
    for (_, images), latent in zip(rows, grid_latents(table, 3), strict=True):
        indices = data.images["index"].iloc[top.indices[latent][top.valid[latent]]]
        assert len(images) == len(indices)
        for image, index in zip(images, indices, strict=True):
            np.testing.assert_array_equal(image, expected[int(index)])  # not a grey square
    assert len(rows[0][1]) == fires.max()


def _atlas_sae(
    tmp_path: Path, store_dir: Path, dataset: dict, sae_dir: Path | None = None
) -> AtlasSae:
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(arch="topk", width=8, k=2), ActivationStore(store_dir / "L1_cls").dim)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)  # every latent fires on some image
    sae_dir = save_sae(sae, sae_dir or tmp_path / "sae")
    return AtlasSae(
        "clip", "L1_cls", "s", "vision", str(sae_dir), str(store_dir / "L1_cls"), "imgs", dataset
    )


def test_without_the_option_no_thumbnails_and_the_atlas_decodes_files(
    model: dict, tmp_path: Path
) -> None:
    dataset = _folder(tmp_path / "imgs")
    _run(dataset, model, tmp_path / "acts")
    assert not (tmp_path / "acts" / "thumbnails.npy").exists()
    store = ActivationStore(tmp_path / "acts" / "L1_cls")
    assert "thumbnail_px" not in store.metadata["settings"]
    expected = _file_thumbnails(dataset, store.examples())
    shown = sorted(np.unique(store.example_index()).tolist())
    decoded = dataset_thumbnails(store, dataset, shown, PX)  # the fallback: the files, again
    for i in shown:
        np.testing.assert_array_equal(decoded[i], expected[i])
    shutil.rmtree(dataset["root"])
    gone = dataset_thumbnails(store, dataset, shown, PX)
    assert all((gone[i] == GREY).all() for i in shown)  # it needed the files


def test_killed_extraction_resumes_with_the_same_thumbnails(model: dict, tmp_path: Path) -> None:
    dataset = _folder(tmp_path / "imgs")
    _run(dataset, model, tmp_path / "straight", thumbnail_px=PX)

    def stop(shard: int) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):  # killed without thumbnails: a partial of other settings
        _run(dataset, model, out, on_shard_complete=stop)
    with pytest.raises(KeyboardInterrupt):
        _run(dataset, model, out, thumbnail_px=PX, on_shard_complete=stop)
    partial = tmp_path / "killed.partial"
    assert (partial / "thumbnails_00000.npy").is_file()
    assert np.load(partial / "thumbnails_00000.npy").shape == (3, PX * PX * 3)  # 1 of 4 unreadable
    (partial / "thumbnails_00001.npy.tmp").write_bytes(b"half a shard")
    result = _run(dataset, model, out, thumbnail_px=PX)
    assert result["resumed_from_shard"] == 1 and result["examples_processed"] == 3
    assert _tree(out) == _tree(tmp_path / "straight")


def test_thumbnails_need_an_image_folder(model: dict, tmp_path: Path) -> None:
    write_world_split(tmp_path / "world", "test", 4, size=16)
    world = {"source": "world", "root": str(tmp_path / "world"), "split": "test"}
    with pytest.raises(ValueError, match=r"extract\.thumbnails"):
        _run(world, model, tmp_path / "acts", thumbnail_px=PX)
    with pytest.raises(ValueError, match="thumbnail_px"):
        _run(_folder(tmp_path / "imgs"), model, tmp_path / "acts", thumbnail_px=-1)


def _config(name: str) -> dict:
    config = yaml.safe_load((ROOT / name).read_text())
    return validate_config(config, ROOT / "schemas" / "config.schema.yaml")


def test_by_default_the_atlas_datasets_keep_thumbnails_not_the_training_set() -> None:
    paper = _config("configs/paper.yaml")
    assert paper["extract"]["thumbnails"] == "auto"
    models = ("clip_vitl14", "dinov2_vitb14", "clip_vitl14_untrained", "dinov2_vitb14_untrained")
    assert thumbnail_stores(paper) == {(m, "imagenet_val") for m in models}
    assert thumbnail_stores(_config("config.yaml")) == set()  # the world's images are stored
    listed = copy.deepcopy(paper)
    listed["extract"]["thumbnails"] = ["imagenet_train"]
    assert thumbnail_stores(validate_config(listed, ROOT / "schemas" / "config.schema.yaml")) == {
        (m, "imagenet_train") for m in models
    }
    listed["extract"]["thumbnails"] = []
    assert thumbnail_stores(listed) == set()


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["world_test"], "'extract.thumbnails[0]': 'world_test' (source world) is not an image"),
        (["nope"], "'extract.thumbnails[0]': 'nope' is not defined"),
    ],
)
def test_listed_thumbnails_must_be_image_folders(names: list[str], expected: str) -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["extract"]["thumbnails"] = names
    with pytest.raises(ConfigError) as info:
        validate_config(config, ROOT / "schemas" / "config.schema.yaml")
    assert expected in str(info.value)
