"""COCO 2017: one annotations archive, one images archive per split, each fetched only when asked
for, and image + caption pairs read from the split a dataset names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saeprobe.config import COCO_SPLITS, coco_archive
from saeprobe.data.download import download_coco
from saeprobe.data.pairs import coco_examples
from saeprobe.rehearsal import datasets
from saeprobe.rehearsal.serve import serving

N_IMAGES = {"train2017": 5, "val2017": 7}
HOST = "images.cocodataset.org"


@pytest.fixture
def coco_hub(tmp_path: Path):
    """The miniature COCO archives served on loopback at their real paths; yields `mllm.coco`
    pointing at them."""
    annotations, images = datasets.coco_files(
        N_IMAGES["train2017"], N_IMAGES["val2017"], size=16, seed=0
    )
    files = tmp_path / "files"
    datasets.write_archive(
        files / HOST / "annotations" / "annotations_trainval2017.zip", "zip", annotations
    )
    for split in COCO_SPLITS:
        datasets.write_archive(files / HOST / "zips" / f"{split}.zip", "zip", images[split])
    with serving(files) as base:
        yield {
            "annotations_url": f"{base}/{HOST}/annotations/annotations_trainval2017.zip",
            "images_urls": {s: f"{base}/{HOST}/zips/{s}.zip" for s in COCO_SPLITS},
            "images_sha256": {"train2017": None, "val2017": None},
        }


def test_only_the_split_asked_for_is_downloaded(coco_hub: dict, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    download_coco(*coco_archive(coco_hub, "val2017"), root)
    assert sorted(p.name for p in (root / "zips").iterdir()) == [
        "val2017.zip",
        "val2017.zip.sha256",
    ]
    assert len(list((root / "val2017").glob("*.jpg"))) == N_IMAGES["val2017"]
    assert not (root / "train2017").exists()
    assert not (root / "annotations").exists()

    download_coco(*coco_archive(coco_hub, "annotations"), root)
    assert {p.name for p in (root / "annotations").iterdir()} == {
        f"{kind}_{split}.json" for kind in ("captions", "instances") for split in COCO_SPLITS
    }
    assert not (root / "train2017").exists()


def test_train_pairs_read_the_train_captions_and_images(coco_hub: dict, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    for part in ("annotations", *COCO_SPLITS):
        download_coco(*coco_archive(coco_hub, part), root)
    captions = {
        split: json.loads((root / "annotations" / f"captions_{split}.json").read_text())
        for split in COCO_SPLITS
    }
    for split in COCO_SPLITS:
        examples = coco_examples(root, split, max_examples=None, seed=0)
        ids = {im["id"] for im in captions[split]["images"]}
        texts = {a["caption"] for a in captions[split]["annotations"]}
        assert len(examples) == N_IMAGES[split]
        assert set(examples.table["source_index"]) == ids
        assert set(examples.table["caption"]) <= texts
        assert all(p.parent == root / split and p.is_file() for p in examples.paths)
    train_ids = {im["id"] for im in captions["train2017"]["images"]}
    assert not train_ids & {im["id"] for im in captions["val2017"]["images"]}


def test_a_split_without_an_archive_names_the_key() -> None:
    coco = {"images_urls": {"val2017": "http://images.cocodataset.org/zips/val2017.zip"}}
    assert coco_archive(coco, "val2017") == (coco["images_urls"]["val2017"], None)
    with pytest.raises(ValueError, match=r"mllm\.coco\.images_urls.*'test2017'.*train2017"):
        coco_archive(coco, "test2017")
    with pytest.raises(ValueError, match=r"mllm\.coco\.images_urls\.train2017"):
        coco_archive(coco, "train2017")
