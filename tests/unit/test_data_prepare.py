"""Paper-config dataset adapters on small local fixtures in ImageNet's folder layout."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from saeprobe.data import PreprocessParams, load_dataset
from saeprobe.data.download import DownloadError, ensure
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


class _RangeServer(http.server.BaseHTTPRequestHandler):
    """Serves `files` with Range support; the first `drops[name]` requests of a file send only
    half of the bytes they announce and close the connection (a dropped download)."""

    files: ClassVar[dict[str, bytes]] = {}
    drops: ClassVar[dict[str, int]] = {}
    ranges: ClassVar[list[str]] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        data = self.files[name]
        start = 0
        if "Range" in self.headers:
            self.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.drops.get(name, 0) > 0:
            self.drops[name] -= 1
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def range_server():
    handler = type("Handler", (_RangeServer,), {"files": {}, "drops": {}, "ranges": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("pinned", [False, True])
def test_a_dropped_download_is_resumed_and_never_accepted(
    range_server, tmp_path: Path, pinned: bool
) -> None:
    handler, url = range_server
    data = bytes(range(256)) * 4000
    handler.files["big.bin"] = data
    handler.drops["big.bin"] = 1
    sha = hashlib.sha256(data).hexdigest() if pinned else None
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="incomplete"):
        ensure(f"{url}/big.bin", dest, sha)
    part = tmp_path / "big.bin.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(data)
    assert not (tmp_path / "big.bin.sha256").exists()  # no wrong hash recorded
    ensure(f"{url}/big.bin", dest, sha)
    assert dest.read_bytes() == data and handler.ranges == [f"bytes={len(data) // 2}-"]
    assert (tmp_path / "big.bin.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()


def test_a_part_file_that_is_already_whole_is_finalised(range_server, tmp_path: Path) -> None:
    handler, url = range_server
    data = b"complete archive bytes" * 100
    handler.files["done.bin"] = data
    (tmp_path / "done.bin.part").write_bytes(data)  # killed between the last byte and the rename
    assert ensure(f"{url}/done.bin", tmp_path / "done.bin", None).read_bytes() == data
    (tmp_path / "wrong.bin.part").write_bytes(data)
    handler.files["wrong.bin"] = data
    with pytest.raises(DownloadError, match="checksum mismatch"):
        ensure(f"{url}/wrong.bin", tmp_path / "wrong.bin", "0" * 64)
    assert not (tmp_path / "wrong.bin.part").exists()


def test_a_killed_unpack_is_redone(server, tmp_path: Path, monkeypatch) -> None:
    """A run killed while unpacking leaves no folder that the next run takes as complete."""
    import saeprobe.data.prepare as prepare

    served, url = server
    files = {f"set/{w}/{i}.jpg": _jpeg(i) for w in WNIDS[:2] for i in range(3)}
    _tar(served / "set.tar.gz", files)
    spec = {
        "source": "imagefolder",
        "root": str(tmp_path / "data" / "ood" / "set"),
        "download": {"url": f"{url}/set.tar.gz"},
    }
    real_unpack = prepare.unpack

    def killed(archive: Path, dest: Path) -> None:
        real_unpack(archive, dest)
        for extra in sorted(dest.rglob("*.jpg"))[3:]:
            extra.unlink()  # as if the process died half way
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "unpack", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_imagefolder("ood", spec, tmp_path / "data")
    assert not Path(spec["root"]).exists()
    monkeypatch.setattr(prepare, "unpack", real_unpack)
    assert prepare_imagefolder("ood", spec, tmp_path / "data")["n_images"] == 6


def test_http_urls_are_tried_over_https_first(range_server, tmp_path: Path, caplog) -> None:
    """The local server speaks plain HTTP only: the https attempt fails and the download falls
    back to the URL as given, once, with a log line."""
    from saeprobe.data.download import https_first

    assert https_first("http://host/a.tar") == ["https://host/a.tar", "http://host/a.tar"]
    assert https_first("https://host/a.tar") == ["https://host/a.tar"]
    handler, url = range_server
    handler.files["f.bin"] = b"x" * 1000
    with caplog.at_level("WARNING"):
        assert ensure(f"{url}/f.bin", tmp_path / "f.bin", None).read_bytes() == b"x" * 1000
    assert "falling back to http://" in caplog.text
