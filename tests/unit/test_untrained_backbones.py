"""Untrained copies of hub vision models (`untrained: true`): the checkpoint's architecture and
preprocessing at a seeded random initialisation, never its weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from tiny_backbones import (
    TINY_OPEN_CLIP_PREPROCESS,
    save_tiny_dinov2,
    save_tiny_hf_clip_full,
    save_tiny_open_clip_local_dir,
    single_thread,
    write_world_split,
)

from saeprobe.activations import ActivationStore, extract
from saeprobe.backbones import load_backbone
from saeprobe.backbones.openclip import untrained_open_clip_settings


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("untrained")
    return {
        "open_clip": {
            "source": "open_clip",
            "name": f"local-dir:{save_tiny_open_clip_local_dir(root / 'open_clip')}",
        },
        "dinov2": {"source": "hf", "name": str(save_tiny_dinov2(root / "dinov2"))},
        "hf_clip_full": {"source": "hf", "name": str(save_tiny_hf_clip_full(root / "clip"))},
    }


def _state(spec: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    return load_backbone(spec, "cpu", seed=seed).model.state_dict()


def _pixels(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


KINDS = ["open_clip", "dinov2", "hf_clip_full"]


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_copy_has_the_architecture_and_preprocessing_not_the_weights(
    specs: dict[str, dict], kind: str
) -> None:
    trained = load_backbone(specs[kind], "cpu")
    untrained = load_backbone({**specs[kind], "untrained": True}, "cpu")
    assert type(untrained.model) is type(trained.model)
    ours, theirs = untrained.model.state_dict(), trained.model.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert all(v.dtype == torch.float32 for v in ours.values())
    assert untrained.preprocess_params == trained.preprocess_params
    assert (untrained.num_layers, untrained.width, untrained.embed_dim, untrained.num_tokens) == (
        trained.num_layers,
        trained.width,
        trained.embed_dim,
        trained.num_tokens,
    )
    # every randomly initialised matrix differs (constant starts, as a mask token's zeros, not)
    matrices = [k for k, v in theirs.items() if v.ndim >= 2 and v.unique().numel() > 1]
    assert matrices and not any(torch.equal(ours[k], theirs[k]) for k in matrices)
    x = _pixels()
    assert not torch.allclose(untrained.embed(x), trained.embed(x))


def test_untrained_open_clip_keeps_the_folders_preprocessing(specs: dict[str, dict]) -> None:
    params = load_backbone({**specs["open_clip"], "untrained": True}, "cpu").preprocess_params
    assert params.mean == pytest.approx(TINY_OPEN_CLIP_PREPROCESS["mean"])
    assert (params.interpolation, params.resize_mode) == ("bilinear", "squash")


def test_an_untrained_hf_hub_clip_fetches_its_config_and_no_weights(
    specs: dict[str, dict], tmp_path: Path, monkeypatch
) -> None:
    """An `hf-hub:` name: the repo's open_clip_config.json alone is fetched (a stand-in hub
    that holds only the config, recording every file asked for); the model is the folder's
    architecture and preprocessing at the seed's weights."""
    folder = Path(specs["open_clip"]["name"].removeprefix("local-dir:"))
    cache = tmp_path / "hub_cache"
    cache.mkdir()
    shutil.copy(folder / "open_clip_config.json", cache)
    asked: list[tuple[str, str]] = []

    def hf_hub_download(repo_id: str, filename: str, **_: object) -> str:
        asked.append((repo_id, filename))
        if not (cache / filename).is_file():
            raise FileNotFoundError(f"{repo_id}/{filename}: not on the stand-in hub")
        return str(cache / filename)

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hf_hub_download)
    spec = {"source": "open_clip", "name": "hf-hub:org/tiny-clip", "untrained": True}
    untrained = load_backbone(spec, "cpu", seed=3)
    assert asked and all(f == "open_clip_config.json" for _, f in asked), asked
    assert {r for r, _ in asked} == {"org/tiny-clip"}
    local = load_backbone({**specs["open_clip"], "untrained": True}, "cpu", seed=3)
    ours, theirs = untrained.model.state_dict(), local.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert untrained.preprocess_params == local.preprocess_params


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_weights_depend_on_the_seed_alone(specs: dict[str, dict], kind: str) -> None:
    spec = {**specs[kind], "untrained": True}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = _state(spec, seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is untouched
    torch.manual_seed(456)  # another global state: the same weights
    second = _state(spec, seed=0)
    other = _state(spec, seed=1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_a_pretrained_tag_gives_its_preprocessing_and_quick_gelu() -> None:
    assert untrained_open_clip_settings("ViT-L-14", "laion2b_s32b_b82k") == (
        {
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
        False,
    )
    settings, quick_gelu = untrained_open_clip_settings("ViT-B-32", "openai")
    assert settings["mean"] == pytest.approx(open_clip.OPENAI_DATASET_MEAN) and quick_gelu
    assert untrained_open_clip_settings("local-dir:/x", "laion2b_s32b_b82k") == ({}, False)
    assert untrained_open_clip_settings("ViT-L-14", "/weights/file.safetensors") == ({}, False)
    assert untrained_open_clip_settings("ViT-L-14", None) == ({}, False)


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_extraction_of_the_untrained_copy_is_reproducible_and_never_resumes_the_trained(
    specs: dict[str, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_world_split(tmp_path / "data", "test", 12, size=16)
    dataset = {"source": "world", "root": str(tmp_path / "data"), "split": "test"}
    site = {"layers": [1], "tokens": ["cls"], "pooled": False}
    trained = {**specs["dinov2"], **site}
    untrained = {**trained, "untrained": True}
    settings = {"batch_size": 4, "shard_examples": 4, "device": "cpu", "progress": False}
    settings["dtype"] = "float32"

    def interrupt(shard: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(dataset, trained, tmp_path / "killed", on_shard_complete=interrupt, **settings)
    with caplog.at_level("WARNING"):
        result = extract(dataset, untrained, tmp_path / "killed", **settings)
    assert result["resumed_from_shard"] is None and "discarding" in caplog.text
    extract(dataset, untrained, tmp_path / "again", **settings)
    extract(dataset, trained, tmp_path / "trained", **settings)
    assert _tree(tmp_path / "killed") == _tree(tmp_path / "again")
    acts = {
        name: ActivationStore(tmp_path / name / "L1_cls").read_rows(0, 12)
        for name in ("again", "trained")
    }
    assert acts["again"].shape == acts["trained"].shape
    assert not np.allclose(acts["again"], acts["trained"])
