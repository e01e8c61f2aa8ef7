"""Activation store: extraction round trip, metadata, shuffled reader, resume, skipped images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_backbones import save_tiny_open_clip, single_thread, write_world_split
from tiny_data import make_image_folder

from saeprobe.activations import ActivationStore, extract
from saeprobe.activations.writer import AsyncWriter, trim_npy_rows
from saeprobe.backbones import Collector, SiteRows, load_backbone
from saeprobe.data import load_dataset
from saeprobe.sae.sources import StoreSource

N_IMAGES = 37


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("world")
    save_tiny_open_clip(root / "model")
    write_world_split(root / "data", "test", N_IMAGES, size=16)
    return {
        "dataset": {"source": "world", "root": str(root / "data"), "split": "test"},
        "model": {
            "source": "world",
            "weights": str(root / "model"),
            "layers": [0, 2],
            "tokens": ["cls", "patches", "mean"],
            "pooled": True,
        },
    }


def _run(world: dict, out: Path, **kwargs) -> dict:
    settings = {"batch_size": 8, "shard_examples": 10, "device": "cpu", "progress": False}
    return extract(world["dataset"], world["model"], out, **{**settings, **kwargs})


def _reference(world: dict) -> dict[str, torch.Tensor]:
    """Every site computed directly with the backbone on all images at once."""
    backbone = load_backbone(world["model"], "cpu")
    ds = load_dataset(world["dataset"], backbone.preprocess_params)
    (batch,) = ds.iter_batches([(0, len(ds))])
    m = world["model"]
    return backbone.collect(backbone.prepare(batch.images), m["layers"], m["tokens"], True)


@pytest.fixture(scope="module")
def stores(world: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("acts")
    _run(world, root / "fp32", dtype="float32")
    _run(world, root / "fp16", dtype="float16")
    return {"fp32": root / "fp32", "fp16": root / "fp16"}


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_round_trip(world: dict, stores: dict[str, Path], dtype: str) -> None:
    reference = _reference(world)
    sites = sorted(p.name for p in stores[dtype].iterdir() if p.is_dir())
    assert sites == sorted(reference)
    np_dtype = np.float32 if dtype == "fp32" else np.float16
    for site, expected in reference.items():
        store = ActivationStore(stores[dtype] / site)
        rows = expected.reshape(-1, expected.shape[-1]).numpy().astype(np_dtype)
        assert store.dtype == np_dtype and store.shard(0).dtype == np_dtype
        # batch composition differs from the one-shot reference: allow float rounding
        np.testing.assert_allclose(store.read_all(dtype=np_dtype), rows, rtol=1e-3, atol=1e-4)


def test_metadata(world: dict, stores: dict[str, Path]) -> None:
    for site, tpi, dim in [("L0_cls", 1, 32), ("L2_patches", 16, 32), ("pooled", 1, 16)]:
        store = ActivationStore(stores["fp16"] / site)
        meta = store.metadata
        assert (meta["dim"], store.dim) == (dim, dim)
        assert meta["count"] == len(store) == N_IMAGES * tpi
        assert meta["n_examples"] == N_IMAGES and meta["n_skipped"] == 0
        assert meta["dtype"] == "float16" and meta["model"] == world["model"]
        assert meta["dataset"]["split"] == "test" and meta["site"] == site
        assert sum(s["rows"] for s in meta["shards"]) == len(store) and len(meta["shards"]) == 4
        data = store.read_all(dtype=np.float64)
        np.testing.assert_allclose(meta["mean"], data.mean(0), rtol=1e-9, atol=1e-12)
        norm = np.linalg.norm(data, axis=1).mean()
        assert meta["mean_norm"] == pytest.approx(norm, rel=1e-9)
        index = np.asarray(store.example_index())
        assert index.dtype == np.int64 and np.array_equal(
            index, np.repeat(np.arange(N_IMAGES), tpi)
        )
        rows = store.rows()
        if tpi > 1:  # patch tokens: positions after the CLS token, per image
            assert np.array_equal(rows["position"], np.tile(np.arange(1, tpi + 1), N_IMAGES))
        else:
            assert list(rows.columns) == ["example"]
    store = ActivationStore(stores["fp16"] / "L2_cls")
    assert ActivationStore(stores["fp16"] / "L2_mean").metadata["tokens"] == "mean"
    assert store.metadata["layer"] == 2 and store.metadata["tokens"] == "cls"
    labels = store.labels()
    assert len(labels) == N_IMAGES and labels[1] == "shape:square"
    summary = json.loads((stores["fp16"] / "extraction.json").read_text())
    assert summary["n_examples"] == N_IMAGES and "L2_patches" in summary["sites"]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_reader_yields_every_row_once(
    stores: dict[str, Path], shuffle: bool, drop_last: bool
) -> None:
    store = ActivationStore(stores["fp32"] / "L2_patches")  # 592 rows in 4 shards
    data = store.read_all()
    seen, batches = [], 0
    for x, idx in store.iter_batches(
        50,
        shuffle=shuffle,
        seed=3,
        drop_last=drop_last,
        chunk_rows=64,
        window_rows=200,
        return_index=True,
    ):
        assert x.dtype == torch.float32 and x.shape[1] == store.dim
        assert np.array_equal(x.numpy(), data[idx.numpy()])
        seen.append(idx.numpy())
        batches += 1
    seen = np.concatenate(seen)
    expected = len(store) // 50 * 50 if drop_last else len(store)
    assert len(seen) == expected and len(np.unique(seen)) == expected
    assert batches == -(-expected // 50)
    assert np.array_equal(seen, np.arange(expected)) != shuffle


def test_reader_is_deterministic_per_seed(stores: dict[str, Path]) -> None:
    store = ActivationStore(stores["fp16"] / "L0_cls")

    def order(seed: int) -> np.ndarray:
        return np.concatenate(
            [
                i.numpy()
                for _, i in store.iter_batches(8, seed=seed, chunk_rows=4, return_index=True)
            ]
        )

    assert np.array_equal(order(0), order(0))
    assert not np.array_equal(order(0), order(1))


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_resume_after_interruption_is_byte_identical(
    world: dict, stores: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "resumed"

    def stop_after_two(shard: int) -> None:
        if shard == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(world, out, dtype="float16", on_shard_complete=stop_after_two)
    partial = tmp_path / "resumed.partial"
    assert not out.exists() and (partial / "progress.json").is_file()
    # a shard that was being written when the process died
    (partial / "L0_cls" / "shard_00002.npy.tmp").write_bytes(b"half a shard")
    result = _run(world, out, dtype="float16")
    assert result["resumed_from_shard"] == 2 and result["examples_processed"] == N_IMAGES - 20
    assert not partial.exists()
    assert _tree(out) == _tree(stores["fp16"])


def test_finished_partial_is_only_renamed(
    world: dict, stores: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "acts"
    _run(world, out, dtype="float16")
    out.rename(tmp_path / "acts.partial")  # as if killed between the last write and the rename
    (tmp_path / "acts.partial" / "L0_cls" / "stats_00003.npy").write_bytes(b"left over")
    result = _run(world, out, dtype="float16")
    assert result["examples_processed"] == 0 and result["n_examples"] == N_IMAGES
    assert _tree(out) == _tree(stores["fp16"])


def _interrupt(shard: int) -> None:
    raise KeyboardInterrupt


def test_changed_settings_restart_and_existing_output_is_kept(
    world: dict, stores: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "restart"
    with pytest.raises(KeyboardInterrupt):
        _run(world, out, dtype="float32", on_shard_complete=_interrupt)
    result = _run(world, out, dtype="float16")  # other settings: the partial run is discarded
    assert result["resumed_from_shard"] is None
    assert _tree(out) == _tree(stores["fp16"])
    with pytest.raises(FileExistsError, match="already exists"):
        _run(world, out, dtype="float16")


def test_corrupt_images_are_skipped_and_counted(world: dict, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")  # 5 good images + 2 unreadable
    model = {**world["model"], "layers": [1], "tokens": ["cls"], "pooled": False}
    result = extract(
        {"source": "imagefolder", "root": str(root)},
        model,
        tmp_path / "acts",
        batch_size=3,
        shard_examples=4,
        num_workers=0,
        device="cpu",
        progress=False,
    )
    assert result["n_skipped"] == 2 and result["n_examples"] == 5
    store = ActivationStore(tmp_path / "acts" / "L1_cls")
    meta = store.metadata
    assert len(store) == 5 and meta["n_skipped"] == 2
    names = sorted(Path(s["path"]).name for s in meta["skipped"])
    assert names == ["img_0a_text.JPEG", "img_1b_truncated.JPEG"]
    skipped_index = {s["index"] for s in meta["skipped"]}
    assert set(np.asarray(store.example_index())) == set(range(7)) - skipped_index
    assert list(store.labels()) == ["n001", "n001", "n001", "n002", "n002"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_trim_npy_rows_in_place(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "shard.npy"
    data = np.arange(700, dtype=np.float64).reshape(100, 7).astype(dtype)
    np.save(path, data)
    trim_npy_rows(path, 37)
    assert np.array_equal(np.load(path), data[:37])
    assert np.load(path, mmap_mode="r").shape == (37, 7)
    trim_npy_rows(path, 0)
    assert np.load(path).shape == (0, 7)


def test_async_writer_runs_tasks_in_order_and_reraises() -> None:
    done: list[int] = []
    writer = AsyncWriter(max_pending=2, background=True)
    for i in range(20):
        writer.submit(lambda i=i: done.append(i))
    writer.join()
    assert done == list(range(20))

    def fail() -> None:
        raise OSError("disk full")

    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.join()
    writer.close()


class _TokenCollector(Collector):
    """A stand-in model with variable rows per example: `n_image` image rows at norm ~10 and one
    text row per word at norm ~1, so every row column and the modality scales can be checked."""

    def __init__(self) -> None:
        self.spec, self.device = {"source": "fake", "name": "fake"}, torch.device("cpu")

    def sites(self) -> list[str]:
        return ["L0_all"]

    def open(self, dataset_spec, seed):
        prompts = [" ".join(["w"] * (1 + i % 3)) for i in range(11)]
        from saeprobe.backbones.text_encoder import PromptSet

        return PromptSet(prompts, "fake")

    def max_rows_per_example(self, site: str) -> int:
        return 8

    def collect(self, batch) -> dict[str, SiteRows]:
        example, position, modality, token_id, acts = [], [], [], [], []
        for i, prompt in zip(batch.indices, batch.items, strict=True):
            rng = np.random.default_rng(int(i))
            for p in range(2):
                example.append(i), position.append(p), modality.append(0), token_id.append(7)
                acts.append(rng.normal(0, 10, 4))
            for p, _ in enumerate(prompt.split()):
                example.append(i), position.append(2 + p), modality.append(1)
                token_id.append(100 + p), acts.append(rng.normal(0, 1, 4))
        rows = SiteRows(
            torch.tensor(np.array(acts), dtype=torch.float32),
            np.array(example),
            position=np.array(position),
            token_id=np.array(token_id),
            modality=np.array(modality),
        )
        return {"L0_all": rows}

    def token_words(self, token_ids):
        return [f"tok{t}" for t in token_ids]


def test_token_rows_keep_their_columns_and_modality_scales(tmp_path: Path) -> None:
    """Variable rows per example through the shared extraction: every row column survives
    shards, the vocabulary is written, and dividing by the modality scales equalises norms."""
    out = tmp_path / "acts"
    extract({"source": "fake"}, {}, out, batch_size=4, shard_examples=5, dtype="float32",
            collector=_TokenCollector(), progress=False)  # fmt: skip
    store = ActivationStore(out / "L0_all")
    rows = store.rows()
    words = [1 + i % 3 for i in range(11)]
    assert len(store) == len(rows) == 2 * 11 + sum(words) and store.num_shards == 3
    assert rows.groupby("example").size().tolist() == [2 + w for w in words]
    assert (rows.loc[rows["modality"] == "image", "word"] == "").all()
    assert set(rows.loc[rows["modality"] == "text", "word"]) == {"tok100", "tok101", "tok102"}
    assert rows.loc[rows["example"] == 2, "position"].tolist() == [0, 1, 2, 3, 4]
    assert store.examples()["prompt"].tolist()[2] == "w w w"
    scales = store.modality_norms(block=7)
    assert scales["image"] > 5 * scales["text"]
    x = store.read_all() / store.row_divisors(scales)[:, None]
    norms = np.linalg.norm(x, axis=1)
    image = (rows["modality"] == "image").to_numpy()
    assert norms[image].mean() == pytest.approx(1.0, rel=1e-5)
    assert norms[~image].mean() == pytest.approx(1.0, rel=1e-5)
    # the SAE trainer's source applies the same divisors to every batch it yields
    source = StoreSource(store, store.row_divisors(scales))
    batches = np.concatenate([b.numpy() for b in source.sequential(10)])
    np.testing.assert_allclose(batches, x, rtol=1e-6)


def test_sae_sweep_never_resumes_on_other_activations(world: dict, tmp_path: Path) -> None:
    """Kill an SAE sweep, re-extract from other weights at the same path (same shapes), rerun:
    the checkpoint and any finished SAE are discarded and the result equals a fresh run."""
    from safetensors.torch import load_file

    from saeprobe.sae.site import train_site

    model = {**world["model"], "layers": [1], "tokens": ["cls"], "pooled": False}
    sweep = {"topk": {"arch": "topk", "width": 16, "k": 2}}
    train = {"batch_size": 8, "epochs": 3, "warmup_steps": 1, "init_sample_size": 16}
    train["checkpoint_every"] = 2

    def stores(seed: int, root: Path) -> Path:
        save_tiny_open_clip(Path(model["weights"]), seed=seed)  # new weights, same path
        extract(world["dataset"], model, root, batch_size=8, device="cpu", progress=False)
        return root / "L1_cls"

    def stop(step: int, saes) -> None:
        if step == 5:
            raise KeyboardInterrupt

    def run(site: Path, out: Path, callback=None) -> dict:
        train_site(site, site, {"topk": out}, sweep, train, out.parent / "sweep.json",
                   callback=callback)  # fmt: skip
        return load_file(out / "sae.safetensors")

    model["weights"] = str(tmp_path / "clip")
    old = stores(0, tmp_path / "old")
    with pytest.raises(KeyboardInterrupt):
        run(old, tmp_path / "sae" / "topk", stop)
    new = stores(1, tmp_path / "new")
    assert ActivationStore(new).content_key() != ActivationStore(old).content_key()
    resumed = run(new, tmp_path / "sae" / "topk")
    fresh = run(new, tmp_path / "fresh" / "topk")
    assert resumed.keys() == fresh.keys()
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)
    # a finished sweep on the old activations is not taken for one on the new
    run(old, tmp_path / "done" / "topk")
    again = run(new, tmp_path / "done" / "topk")
    assert all(torch.equal(again[k], fresh[k]) for k in fresh)


def test_extraction_never_resumes_from_other_weights(
    world: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Kill an extraction, replace the weights at the same path, rerun: the partial store is
    discarded (and says so), and the result equals an uninterrupted run on the new weights."""
    model = {**world["model"], "weights": str(tmp_path / "clip")}
    save_tiny_open_clip(tmp_path / "clip", seed=0)
    spec = {**world, "model": model}
    with pytest.raises(KeyboardInterrupt):
        _run(spec, tmp_path / "killed", dtype="float32", on_shard_complete=_interrupt)
    save_tiny_open_clip(tmp_path / "clip", seed=1)
    with caplog.at_level("WARNING"):
        result = _run(spec, tmp_path / "killed", dtype="float32")
    assert result["resumed_from_shard"] is None and "discarding" in caplog.text
    _run(spec, tmp_path / "straight", dtype="float32")
    assert _tree(tmp_path / "killed") == _tree(tmp_path / "straight")
