"""The miniature hub: archives laid out as the config's datasets expect, served with Range."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from snakemake_run import ROOT

from saeprobe.data.download import ensure
from saeprobe.data.prepare import prepare_imagefolder
from saeprobe.data.wordnet import read_wordnet
from saeprobe.rehearsal import datasets
from saeprobe.rehearsal.build import FILES, build_files, load_configs
from saeprobe.rehearsal.serve import serving

CONFIG = load_configs([ROOT / "configs" / "paper.yaml", ROOT / "configs" / "rehearsal.yaml"])


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("hub")
    build_files(CONFIG, workdir)
    return workdir


def test_server_resumes_with_range_and_refuses_a_range_past_the_end(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(bytes(range(256)) * 10)
    with serving(tmp_path) as base:
        part = tmp_path / "out" / "f.bin.part"
        part.parent.mkdir()
        part.write_bytes(bytes(range(256)) * 3)
        got = ensure(f"{base}/f.bin", tmp_path / "out" / "f.bin", None)
        assert got.read_bytes() == (tmp_path / "f.bin").read_bytes()
        request = urllib.request.Request(f"{base}/f.bin", headers={"Range": "bytes=5000-"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request)
        assert err.value.code == 416
        assert err.value.headers["Content-Range"] == "bytes */2560"


def expected_classes(name: str) -> int:
    """Class folders of dataset `name` in the miniature: its own classes for an OOD set, the
    ImageNet subset for R and A, every miniature ImageNet class otherwise."""
    if name in CONFIG["vision"]["ood_detection"]["ood_datasets"]:
        return datasets.OOD_CLASSES
    return datasets.CLASS_SUBSETS.get(name, len(datasets.WNIDS))


def test_every_image_folder_is_prepared_at_its_root(hub: Path, monkeypatch) -> None:
    monkeypatch.chdir(hub)
    folders = {n: s for n, s in CONFIG["datasets"].items() if s["source"] == "imagefolder"}
    with serving(hub / FILES) as base:
        for name, spec in folders.items():
            if "download" in spec:
                url = spec["download"]["url"].replace("http://127.0.0.1:8765", base)
                spec = {**spec, "download": {"url": url}}
            info = prepare_imagefolder(name, spec, "data")
            assert info["root"] == folders[name]["root"]
            assert info["n_classes"] == expected_classes(name), name
    v2 = hub / folders["imagenet_v2"]["root"]
    assert {p.name for p in v2.iterdir()} == {str(i) for i in range(len(datasets.WNIDS))}


def test_wordnet_files_cover_every_wnid(tmp_path: Path) -> None:
    is_a, words = datasets.wordnet_files()
    (tmp_path / "is_a.txt").write_bytes(is_a)
    (tmp_path / "words.txt").write_bytes(words)
    hierarchy = read_wordnet(tmp_path / "is_a.txt", tmp_path / "words.txt")
    for wnid, name in datasets.WNIDS.items():
        assert hierarchy.parents[wnid] is not None
        assert hierarchy.names[wnid] == name


def test_an_unknown_archive_or_a_url_off_the_hub_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.rar.*expected a \.tar"):
        datasets.archive_kind("http://example.org/x.rar")
    off_hub = {
        **CONFIG,
        "datasets": {
            **CONFIG["datasets"],
            "sun": {
                **CONFIG["datasets"]["sun"],
                "download": {"url": "http://example.org/SUN.tar.gz"},
            },
        },
    }
    with pytest.raises(ValueError, match=r"datasets\.sun\.download\.url.*loopback"):
        build_files(off_hub, tmp_path)


def test_the_hub_serves_each_coco_split_the_datasets_read(hub: Path) -> None:
    """An images zip per split, holding only that split, with enough images for every coco
    dataset of the config (as many as its max_examples + offset)."""
    coco = CONFIG["mllm"]["coco"]
    files = hub / FILES
    with zipfile.ZipFile(datasets.url_path(files, coco["annotations_url"])) as zf:
        captions = {
            split: len(json.loads(zf.read(f"annotations/captions_{split}.json"))["images"])
            for split in coco["images_urls"]
        }
    splits = {s["split"] for s in CONFIG["datasets"].values() if s["source"] == "coco"}
    assert splits == {"train2017", "val2017"} <= set(coco["images_urls"])
    for split, url in coco["images_urls"].items():
        with zipfile.ZipFile(datasets.url_path(files, url)) as zf:
            names = [n for n in zf.namelist() if n.endswith(".jpg")]
        assert names and all(n.startswith(f"{split}/") for n in names), split
        assert len(names) == captions[split]
    for name, spec in CONFIG["datasets"].items():
        if spec["source"] == "coco":
            need = spec["max_examples"] + spec.get("offset", 0)
            assert need <= captions[spec["split"]], name
