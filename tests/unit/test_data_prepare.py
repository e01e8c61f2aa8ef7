"""Paper-config dataset adapters on small local fixtures in ImageNet's folder layout."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saeprobe.data import PreprocessParams, load_dataset
from saeprobe.data.prepare import DatasetMissing, prepare_imagefolder, sort_by_wnid

WNIDS = ["n01440764", "n01443537", "n01484850"]
PARAMS = PreprocessParams(image_size=16, resize_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"img_{i}.JPEG").write_bytes(_jpeg(10 * c + i))
    return root


@pytest.fixture
def server(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_public_archive_is_downloaded_unpacked_and_checked(server, tmp_path: Path) -> None:
    served, url = server
    files = {f"imagenet-r/{w}/{i}.jpg": _jpeg(i) for w in WNIDS[:2] for i in range(3)}
    _tar(served / "imagenet-r.tar.gz", files)
    spec = {
        "source": "imagefolder",
        "root": str(tmp_path / "data" / "imagenet_r" / "imagenet-r"),
        "download": {"url": f"{url}/imagenet-r.tar.gz"},
    }
    summary = prepare_imagefolder("imagenet_r", spec, tmp_path / "data")
    assert summary == {"root": spec["root"], "n_images": 6, "n_classes": 2}
    dataset = load_dataset(spec, PARAMS)
    assert sorted(set(dataset.labels())) == WNIDS[:2]
    # a second call finds the folder and downloads nothing
    (served / "imagenet-r.tar.gz").unlink()
    assert prepare_imagefolder("imagenet_r", spec, tmp_path / "data")["n_images"] == 6


def test_missing_gated_dataset_says_what_to_provide(tmp_path: Path, monkeypatch) -> None:
    spec = {"source": "imagefolder", "root": str(tmp_path / "imagenet" / "val")}
    with pytest.raises(
        DatasetMissing, match=r"imagenet/val/<class>/<image>.*datasets\.imagenet_val"
    ):
        prepare_imagefolder("imagenet_val", spec, tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = {**spec, "hub": {"repo": "ILSVRC/imagenet-1k", "files": ["data/val_images.tar.gz"]}}
    with pytest.raises(DatasetMissing, match="HF_TOKEN"):
        prepare_imagefolder("imagenet_val", hub, tmp_path)


def test_hub_archives_are_sorted_into_wnid_folders(tmp_path: Path) -> None:
    files = {f"ILSVRC2012_val_{i:08d}_{WNIDS[i % 3]}.JPEG": _jpeg(i) for i in range(6)}
    files["README.txt"] = b"not an image"
    archive = _tar(tmp_path / "val_images.tar.gz", files)
    assert sort_by_wnid(archive, tmp_path / "val") == 6
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == WNIDS
    assert (
        load_dataset({"source": "imagefolder", "root": str(tmp_path / "val")}, PARAMS)
        .labels()
        .count(WNIDS[0])
        == 2
    )


def test_index_named_folders_take_the_class_names_of_another_dataset(tmp_path: Path) -> None:
    train = _folder(tmp_path / "train", WNIDS)
    v2 = _folder(tmp_path / "v2", ["0", "2"])
    spec = {"source": "imagefolder", "root": str(v2), "index_classes_root": str(train)}
    assert sorted(set(load_dataset(spec, PARAMS).labels())) == [WNIDS[0], WNIDS[2]]
    _folder(tmp_path / "bad", ["7"])
    with pytest.raises(ValueError, match="not an index below 3"):
        load_dataset({**spec, "root": str(tmp_path / "bad")}, PARAMS)
