"""Dataset adapters: world arrays and ImageNet-style folders, including unreadable files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_backbones import write_world_split
from tiny_data import make_image_folder

from saeprobe.data import PreprocessParams, load_dataset, transform_pil

PARAMS_16 = PreprocessParams(16, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
PARAMS_8 = PreprocessParams(8, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), interpolation="bilinear")


def test_world_split_reads_batches_in_order(tmp_path: Path) -> None:
    write_world_split(tmp_path, "test", 10, size=16)
    ds = load_dataset({"source": "world", "root": str(tmp_path), "split": "test"}, PARAMS_16)
    assert len(ds) == 10 and ds.labels()[:3] == ["shape:circle", "shape:square", "shape:triangle"]
    assert ds.manifest.columns[0] == "index" and {"label", "source_index"} <= set(ds.manifest)
    raw = np.load(tmp_path / "test" / "images.npy")
    for prefetch in (True, False):
        batches = list(ds.iter_batches([(0, 4), (4, 7), (7, 10)], prefetch=prefetch))
        assert [len(b.indices) for b in batches] == [4, 3, 3]
        images = torch.cat([b.images for b in batches])
        assert images.dtype == torch.uint8 and images.shape == (10, 3, 16, 16)
        assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), raw)
        assert np.array_equal(np.concatenate([b.indices for b in batches]), np.arange(10))


def test_world_split_is_resized_to_the_model_input(tmp_path: Path) -> None:
    write_world_split(tmp_path, "test", 4, size=16)
    spec = {"source": "world", "root": str(tmp_path), "split": "test", "max_images": 3}
    ds = load_dataset(spec, PARAMS_8)
    (batch,) = ds.iter_batches([(0, 3)])
    assert len(ds) == 3 and batch.images.shape == (3, 3, 8, 8)


def test_world_subset_is_seeded_and_keeps_source_rows(tmp_path: Path) -> None:
    write_world_split(tmp_path, "test", 20, size=16)
    spec = {"source": "world", "root": str(tmp_path), "split": "test", "max_images": 6}
    ds = load_dataset(spec, PARAMS_16, seed=3)
    rows = ds.manifest["source_index"].to_numpy()
    assert list(ds.manifest["index"]) == list(range(6)) and list(rows) == sorted(rows)
    assert list(load_dataset(spec, PARAMS_16, seed=3).manifest["source_index"]) == list(rows)
    (batch,) = ds.iter_batches([(0, 6)], prefetch=False)
    raw = np.load(tmp_path / "test" / "images.npy")[rows]
    assert np.array_equal(batch.images.permute(0, 2, 3, 1).numpy(), raw)


def test_world_split_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images\.npy"):
        load_dataset({"source": "world", "root": str(tmp_path), "split": "test"}, PARAMS_16)
    write_world_split(tmp_path, "test", 4)
    np.save(tmp_path / "test" / "images.npy", np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        load_dataset({"source": "world", "root": str(tmp_path), "split": "test"}, PARAMS_16)


def test_image_folder_lists_sorted_files_with_folder_labels(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", with_bad=False)
    ds = load_dataset({"source": "imagefolder", "root": str(root)}, PARAMS_16)
    assert ds.manifest["path"].tolist() == [
        "n001/img_0.JPEG",
        "n001/img_1.png",
        "n001/img_2.JPEG",
        "n002/img_0.JPEG",
        "n002/img_1.png",
    ]
    assert ds.labels() == ["n001"] * 3 + ["n002"] * 2
    (batch,) = ds.iter_batches([(0, 5)])
    assert batch.images.shape == (5, 3, 16, 16) and batch.skipped == []
    expected = transform_pil(Image.open(root / "n001/img_1.png"), PARAMS_16)
    assert torch.equal(batch.images[1], expected)


def test_corrupt_images_are_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_image_folder(tmp_path / "imgs")
    ds = load_dataset({"source": "imagefolder", "root": str(root)}, PARAMS_16)
    assert len(ds) == 7
    with caplog.at_level(logging.WARNING):
        batches = list(ds.iter_batches([(0, 4), (4, 7)], num_workers=2))
    skipped = [s for b in batches for s in b.skipped]
    assert sorted(Path(s.path).name for s in skipped) == [
        "img_0a_text.JPEG",
        "img_1b_truncated.JPEG",
    ]
    assert all(s.error for s in skipped)
    kept = np.concatenate([b.indices for b in batches])
    assert len(kept) == 5 and not set(kept) & {s.index for s in skipped}
    assert sum(len(b.images) for b in batches) == 5
    assert "img_1b_truncated.JPEG" in caplog.text and "img_0a_text.JPEG" in caplog.text


def test_image_folder_subset_is_seeded(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", with_bad=False)
    spec = {"source": "imagefolder", "root": str(root), "max_images": 3}
    a = load_dataset(spec, PARAMS_16, seed=1).manifest["path"].tolist()
    b = load_dataset(spec, PARAMS_16, seed=1).manifest["path"].tolist()
    assert a == b and len(a) == 3 and a == sorted(a)
    others = {tuple(load_dataset(spec, PARAMS_16, seed=s).manifest["path"]) for s in range(8)}
    assert len(others) > 1


def test_missing_image_folder_names_key_and_layout(tmp_path: Path) -> None:
    spec = {"source": "imagefolder", "root": str(tmp_path / "nowhere"), "name": "imagenet_val"}
    with pytest.raises(FileNotFoundError, match=r"datasets\.imagenet_val\.root.*root/<class>"):
        load_dataset(spec, PARAMS_16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        load_dataset({"source": "imagefolder", "root": str(tmp_path / "empty")}, PARAMS_16)
    with pytest.raises(ValueError, match="source"):
        load_dataset({"source": "webdataset", "root": str(tmp_path)}, PARAMS_16)


def test_preprocess_params_validate() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessParams(16, 16, (0, 0, 0), (1, 1, 1), interpolation="cubic")
    p = PreprocessParams(16, 20, (0, 0, 0), (1, 1, 1))
    image = Image.fromarray(np.zeros((40, 30, 3), np.uint8))
    assert transform_pil(image, p).shape == (3, 16, 16)


def test_an_image_with_too_many_pixels_is_reported_and_skipped(tmp_path: Path) -> None:
    """A header that announces more than `max_pixels` is refused before decoding (a 12 KB PNG
    can announce 100 megapixels) and reported like a corrupt image."""
    root = make_image_folder(tmp_path / "imgs", with_bad=False)
    spec = {"source": "imagefolder", "root": str(root), "max_pixels": 20 * 24}
    ds = load_dataset(spec, PARAMS_16)
    (batch,) = ds.iter_batches([(0, len(ds))])
    names = sorted(Path(s.path).name for s in batch.skipped)
    # 24 px wide, 20 + i rows: only the two 20-row images fit
    assert len(batch.indices) == 2 and names == ["img_1.png", "img_1.png", "img_2.JPEG"]
    assert all("pixels, more than the 480 allowed" in s.error for s in batch.skipped)
    (full,) = load_dataset({**spec, "max_pixels": None}, PARAMS_16).iter_batches([(0, len(ds))])
    assert len(full.indices) == 5


def test_reading_stores_and_saes_does_not_import_torchvision() -> None:
    """torchvision loads torch._dynamo (about 2 s a job); only jobs that resize images need it."""
    import subprocess
    import sys

    code = (
        "import sys, saeprobe.activations, saeprobe.sae, saeprobe.eval.features; "
        "print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
