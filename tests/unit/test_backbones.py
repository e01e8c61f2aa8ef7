"""Backbones against the libraries' own forward passes, on tiny random models saved locally."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from tiny_backbones import (
    save_tiny_dinov2,
    save_tiny_hf_clip_full,
    save_tiny_hf_clip_vision,
    save_tiny_open_clip,
    single_thread,
    tiny_open_clip,
)

from saeprobe.backbones import load_backbone
from saeprobe.data import transform_pil


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "world": save_tiny_open_clip(root / "world"),
        "hf_clip": save_tiny_hf_clip_vision(root / "hf_clip"),
        "hf_clip_full": save_tiny_hf_clip_full(root / "hf_clip_full"),
        "dinov2": save_tiny_dinov2(root / "dinov2"),
    }


def _spec(models: dict[str, Path], kind: str) -> dict:
    if kind == "world":
        return {"source": "world", "weights": str(models["world"])}
    return {"source": "hf", "name": str(models[kind])}


def _pixels(n: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _reference_open_clip(model_dir: Path) -> tuple[torch.nn.Module, Callable]:
    """The same weights loaded by open_clip's own calls, independently of the backbone."""
    from saeprobe.world.clip import register_model_config

    cfg = json.loads((model_dir / "open_clip_config.json").read_text())
    model, _, preprocess = open_clip.create_model_and_transforms(
        register_model_config(cfg), pretrained=str(model_dir / "open_clip_model.safetensors")
    )
    return model.eval(), preprocess


def test_open_clip_residual_stream_matches_manual_forward(models: dict[str, Path]) -> None:
    backbone = load_backbone(_spec(models, "world"), "cpu")
    reference, _ = _reference_open_clip(models["world"])
    x = _pixels()
    out = backbone.collect(x, [0, 1, 2], ["cls", "patches", "all", "mean"], pooled=True)
    with torch.inference_mode():
        h = reference.visual._embeds(x)
        for i, block in enumerate(reference.visual.transformer.resblocks):
            h = block(h)
            torch.testing.assert_close(out[f"L{i}_all"], h, rtol=0, atol=0)
            torch.testing.assert_close(out[f"L{i}_cls"], h[:, 0], rtol=0, atol=0)
            torch.testing.assert_close(out[f"L{i}_patches"], h[:, 1:], rtol=0, atol=0)
            torch.testing.assert_close(out[f"L{i}_mean"], h[:, 1:].mean(1))
        embedding = reference.encode_image(x)
    assert out["L0_patches"].shape == (3, 16, 32)
    torch.testing.assert_close(out["pooled"], embedding, rtol=0, atol=0)
    assert backbone.num_layers == 3 and backbone.embed_dim == 16 and backbone.width == 32


def test_open_clip_weights_are_the_saved_ones(models: dict[str, Path]) -> None:
    backbone = load_backbone(_spec(models, "world"), "cpu")
    original = tiny_open_clip(seed=0).visual
    for (name, a), (_, b) in zip(
        backbone.model.state_dict().items(), original.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", ["world", "hf_clip", "hf_clip_full", "dinov2"])
def test_early_stop_runs_no_later_block(models: dict[str, Path], kind: str) -> None:
    backbone = load_backbone(_spec(models, kind), "cpu")
    x = _pixels()
    full = backbone.collect(x, [0], ["cls", "all"], pooled=True)
    calls = []
    handle = backbone.blocks[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        early = backbone.collect(x, [0], ["cls", "all"], pooled=False)
    finally:
        handle.remove()
    assert calls == [] and set(early) == {"L0_cls", "L0_all"}
    for key, value in early.items():
        torch.testing.assert_close(value, full[key], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["world", "hf_clip", "hf_clip_full", "dinov2"])
def test_forward_with_patch(models: dict[str, Path], kind: str) -> None:
    backbone = load_backbone(_spec(models, kind), "cpu")
    x = _pixels()
    clean = backbone.embed(x)
    identity = backbone.forward_with_patch(x, 0, lambda h: h)
    torch.testing.assert_close(identity, clean, rtol=0, atol=0)
    zeroed = backbone.forward_with_patch(x, 0, torch.zeros_like)
    assert zeroed.shape == clean.shape
    assert not torch.allclose(zeroed, clean)
    # a patch after the last block still flows into the head
    last = backbone.num_layers - 1
    rolled = backbone.forward_with_patch(x, last, lambda h: h.roll(1, dims=-1))
    assert not torch.allclose(rolled, clean)


@pytest.mark.parametrize("kind", ["hf_clip", "dinov2"])
def test_hf_residual_stream_matches_hidden_states(models: dict[str, Path], kind: str) -> None:
    from transformers import AutoModel

    backbone = load_backbone(_spec(models, kind), "cpu")
    reference = AutoModel.from_pretrained(str(models[kind])).eval()
    x = _pixels()
    out = backbone.collect(x, [0, 1, 2], ["cls", "all"], pooled=True)
    with torch.inference_mode():
        ref = reference(pixel_values=x, output_hidden_states=True)
    assert len(ref.hidden_states) == backbone.num_layers + 1
    for i in range(3):
        torch.testing.assert_close(out[f"L{i}_all"], ref.hidden_states[i + 1], rtol=0, atol=0)
        torch.testing.assert_close(out[f"L{i}_cls"], ref.hidden_states[i + 1][:, 0])
    torch.testing.assert_close(out["pooled"], ref.pooler_output, rtol=0, atol=0)


def test_hf_full_clip_pooled_is_the_projected_image_embedding(models: dict[str, Path]) -> None:
    from transformers import CLIPModel

    backbone = load_backbone(_spec(models, "hf_clip_full"), "cpu")
    reference = CLIPModel.from_pretrained(str(models["hf_clip_full"])).eval()
    x = _pixels()
    with torch.inference_mode():
        features = reference.get_image_features(pixel_values=x)
        features = getattr(features, "pooler_output", features)
    assert backbone.embed_dim == 8
    torch.testing.assert_close(backbone.embed(x), features, rtol=0, atol=0)


def test_preprocess_params_come_from_the_library(models: dict[str, Path]) -> None:
    world = load_backbone(_spec(models, "world"), "cpu").preprocess_params
    assert (world.image_size, world.resize_size, world.interpolation) == (16, 16, "bicubic")
    assert world.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    dino = load_backbone(_spec(models, "dinov2"), "cpu").preprocess_params
    assert (dino.image_size, dino.resize_size, dino.center_crop) == (16, 18, True)
    assert dino.mean == pytest.approx((0.485, 0.456, 0.406))


def test_uint8_path_matches_open_clip_preprocess(models: dict[str, Path]) -> None:
    backbone = load_backbone(_spec(models, "world"), "cpu")
    _, preprocess = _reference_open_clip(models["world"])
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8))
    ours = backbone.prepare(transform_pil(image, backbone.preprocess_params)[None])
    torch.testing.assert_close(ours[0], preprocess(image), rtol=0, atol=1e-6)


def test_hf_uint8_path_matches_image_processor(models: dict[str, Path]) -> None:
    from transformers import AutoImageProcessor

    backbone = load_backbone(_spec(models, "dinov2"), "cpu")
    processor = AutoImageProcessor.from_pretrained(str(models["dinov2"]))
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (30, 41, 3), dtype=np.uint8))
    ours = backbone.prepare(transform_pil(image, backbone.preprocess_params)[None])
    theirs = processor(images=image, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 16, 16)
    # PIL and torchvision resizes may round a pixel differently: at most one grey level
    std = torch.tensor(backbone.preprocess_params.std).view(1, 3, 1, 1)
    assert ((ours - theirs) * std * 255).abs().max() <= 1.001


def test_bad_requests_name_the_problem(models: dict[str, Path]) -> None:
    backbone = load_backbone(_spec(models, "world"), "cpu")
    with pytest.raises(ValueError, match="layer 3 out of range"):
        backbone.collect(_pixels(), [3], ["cls"], pooled=False)
    with pytest.raises(ValueError, match="tokens"):
        backbone.collect(_pixels(), [0], ["everything"], pooled=False)
    with pytest.raises(ValueError, match="source"):
        load_backbone({"source": "timm", "name": "x"}, "cpu")
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json"):
        load_backbone({"source": "world", "weights": str(models["world"] / "missing")}, "cpu")
