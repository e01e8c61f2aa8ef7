"""benchmarks/paper_scale.py at a tiny size: it builds the paper's layout and every vision
task runs on it; decoding with JPEG draft mode stays close to the full decode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saeprobe.activations.store import ActivationStore
from saeprobe.data.preprocess import PreprocessParams, load_image
from saeprobe.eval.features import load_site

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("paper_scale", ROOT / "benchmarks/paper_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    bench = _benchmark()
    root = tmp_path_factory.mktemp("paper_scale")
    bench.build(root, scale=0.001, n_sites=1, n_saes=2, width=64, dim=16, seed=0)
    return bench, root


def test_build_writes_the_paper_layout_at_scale(built: tuple) -> None:
    bench, root = built
    site = json.loads((root / "sites.json").read_text())[0]
    store = ActivationStore(root / "activations" / bench.MODEL / bench.TRAIN / site)
    assert len(store) == round(bench.SIZES[bench.TRAIN] * 0.001) and store.dim == 16
    assert store.dtype == np.float16
    for dataset in [bench.VAL, *bench.OOD, *bench.SHIFTED]:
        assert (root / "activations" / bench.MODEL / dataset / site / "metadata.json").is_file()
    assert sorted(p.name for p in (root / "saes" / bench.MODEL / site).iterdir()) == [
        "batchtopk",
        "topk",
    ]


@pytest.mark.parametrize("task", ["semantics", "ood_detection", "ood_generalization", "ontology"])
def test_every_vision_task_runs_on_the_built_data(built: tuple, task: str) -> None:
    bench, root = built
    assert bench.run_task(task, root, scale=0.001, probe_iter=3) > 0  # numpy bytes at peak


def test_skip_inverse_runs_ood_detection_with_the_diagonal_stand_in(built: tuple) -> None:
    from saeprobe.eval import ood_detection, ood_generalization, probes

    bench, root = built
    samples: list = []
    inverse = ood_detection.invert_spd_in_place
    assert bench.run_task("ood_detection", root, 0.001, 3, skip_inverse=True, samples=samples)
    assert ood_detection.invert_spd_in_place is inverse  # the library is restored afterwards
    assert ood_detection.fit_probe is ood_generalization.fit_probe is probes.fit_probe
    assert samples and all(len(s) == 3 and s[0] > 0 for s in samples)
    assert any(fitting for *_, fitting in samples)  # the probes' fits are marked
    a = np.array([[4.0, 1.0], [1.0, 2.0]])
    assert bench.diagonal_inverse_in_place(a, block=1)
    np.testing.assert_array_equal(a, [[0.25, 0.0], [0.0, 0.5]])


def test_sampled_extrapolation_adds_the_missing_history_only_during_fits() -> None:
    bench = _benchmark()
    mb = 2**20
    samples = [(100 * mb, 10 * mb, False), (80 * mb, 10 * mb, True), (90 * mb, 0, True)]
    assert bench.sampled_full_size_mb(samples, 0.5, 50.0) == pytest.approx(140.0)
    assert bench.sampled_full_size_mb(samples, 0.5, 0.0) == pytest.approx(110.0)
    assert np.isnan(bench.sampled_full_size_mb([], 0.5, 0.0))


def test_lbfgs_missing_history_counts_the_pairs_a_short_fit_does_not_reach() -> None:
    bench = _benchmark()
    pair_mb = 2 * (16384 * 1000 + 1000) * 4 / 2**20  # one (s, y) pair of 16,384 x 1,000 probes
    assert bench.lbfgs_missing_mb(3, 16384) == pytest.approx(18 * pair_mb)
    assert bench.lbfgs_missing_mb(21, 16384) == 0.0
    assert bench.lbfgs_missing_mb(None, 16384) == 0.0


def test_run_task_rejects_an_unknown_task(built: tuple) -> None:
    bench, root = built
    with pytest.raises(ValueError, match="--task"):
        bench.run_task("nope", root, scale=0.001, probe_iter=3)


def test_a_subset_reads_only_its_rows_and_matches_the_whole_store(built: tuple) -> None:
    bench, root = built
    site = json.loads((root / "sites.json").read_text())[0]
    folder = root / "activations" / bench.MODEL / bench.TRAIN
    subset = load_site(folder, site, max_images=100, seed=3)
    whole = ActivationStore(folder / site).read_all()
    np.testing.assert_array_equal(subset.tokens, whole[subset.images["index"].to_numpy()])
    with pytest.raises(ValueError, match="sorted rows"):
        ActivationStore(folder / site).take(np.array([5, 2]))


def _photo(path: Path, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize(size, Image.BICUBIC).save(path, quality=90)


def test_draft_decoding_stays_within_tolerance_of_the_full_decode(tmp_path: Path) -> None:
    params = PreprocessParams(224, 224, (0.5,) * 3, (0.5,) * 3)
    _photo(tmp_path / "big.jpg", (1000, 750))
    with Image.open(tmp_path / "big.jpg") as image:
        image.draft("RGB", (224, 224))
        assert image.size == (500, 375)  # the draft does shrink this one
    full = load_image(tmp_path / "big.jpg", params, draft_mode=False).float()
    fast = load_image(tmp_path / "big.jpg", params, draft_mode=True).float()
    assert fast.shape == full.shape == (3, 224, 224)
    assert (fast - full).abs().mean() < 2.0  # grey levels of 255
    # a different image is far outside that tolerance: the check can fail
    other = torch.flip(full, dims=[2])
    assert (other - full).abs().mean() > 10.0


def test_draft_leaves_small_jpegs_and_other_formats_alone(tmp_path: Path) -> None:
    params = PreprocessParams(224, 224, (0.5,) * 3, (0.5,) * 3)
    _photo(tmp_path / "small.jpg", (400, 300))
    Image.open(tmp_path / "small.jpg").save(tmp_path / "small.png")
    for name in ("small.jpg", "small.png"):
        full = load_image(tmp_path / name, params, draft_mode=False)
        assert torch.equal(load_image(tmp_path / name, params, draft_mode=True), full)


def test_decode_rate_counts_images_per_second(tmp_path: Path) -> None:
    bench = _benchmark()
    paths = bench.write_jpegs(tmp_path, 3)
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert bench.decode_rate(paths, draft=True) > 0


def test_thumbnail_records_time_the_loader_and_size_the_sets(tmp_path: Path) -> None:
    bench = _benchmark()
    paths = bench.write_jpegs(tmp_path, 3)
    records = bench.thumbnail_records(paths, "500x375", repeats=1)
    rates = {
        r["thumbnail_px"]: r["images_per_s_per_worker"] for r in records if "thumbnail_px" in r
    }
    assert set(rates) == {0, 64} and min(rates.values()) > 0
    sizes = {r["dataset"]: r["thumbnails_gb"] for r in records if "dataset" in r}
    assert sizes["imagenet_val"] == 0.61 and sizes["imagenet_train (all)"] == 15.74
