"""saeprobe.training (schedule, checkpoint sets, content fingerprints) and the resume of every
world trainer: killed and rerun it ends bit for bit as an uninterrupted run; rerun on inputs whose
content changed in between it starts over and ends as an uninterrupted run on the new inputs."""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saeprobe.io import atomic_save_tensors
from saeprobe.training import (
    Checkpoints,
    Fingerprint,
    checkpoint_steps,
    file_digest,
    fingerprint,
    latest_checkpoint,
    load_optimizer_tensors,
    optimizer_tensors,
    save_checkpoint,
    warmup_cosine,
)
from saeprobe.world.clip import build_world_clip, save_world_clip, train_world_clip
from saeprobe.world.config import WorldClipConfig, WorldConfig
from saeprobe.world.diffusion import WorldDiffusionConfig, train_world_diffusion
from saeprobe.world.generate import generate_world
from saeprobe.world.llava import CaptionerConfig, train_world_llava
from saeprobe.world.llava_model import TinyLlamaSpec

SPLITS = {"train": 64, "test": 8, "ood_shape": 4, "ood_texture": 4}
SPLITS |= {"shift_outline": 4, "shift_noise": 4}
CLIP = {
    "steps": 6,
    "batch_size": 16,  # 4 batches per epoch: the run crosses a reshuffle
    "embed_dim": 16,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_head_width": 16,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "warmup_steps": 2,
    "device": "cpu",
    "threads": 1,
}


class Killed(Exception):
    """Raised from a training hook to stop a run as a kill would."""


# -- the module -------------------------------------------------------------------------------


def test_warmup_cosine_schedule() -> None:
    lr = [warmup_cosine(s, 10, 1.0, 2, 0.1) for s in range(12)]
    assert lr[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lr[2:]))
    assert math.isclose(lr[10], 0.1) and lr[11] == lr[10]
    assert math.isclose(warmup_cosine(6, 10, 1.0, 2, 0.1), 0.1 + 0.45)


def _parts(step: int) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "model": {"w": torch.full((3,), float(step))},
        "optimizer": {"0.step": torch.tensor(1.0)},
    }


def test_checkpoint_set_keeps_two_and_takes_only_complete_ones(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    assert latest_checkpoint(d) is None
    for step in (2, 4, 6):
        save_checkpoint(d, step, _parts(step), {"losses": [1.0, 0.5]})
    assert checkpoint_steps(d) == [4, 6]
    assert sorted(p.name for p in d.iterdir()) == [
        f"step_{s:09d}.{x}"
        for s in (4, 6)
        for x in ("json", "model.safetensors", "optimizer.safetensors")
    ]
    step, tensors, state = latest_checkpoint(d)
    assert step == 6 and state == {"losses": [1.0, 0.5], "step": 6}
    assert torch.equal(tensors["model"]["w"], torch.full((3,), 6.0))
    # a kill while writing step 8: its tensors are there, its JSON (written last) is not
    (d / "step_000000006.model.safetensors").replace(d / "step_000000008.model.safetensors")
    assert checkpoint_steps(d) == [4]  # 6 lost a part, 8 has no JSON
    assert latest_checkpoint(d).step == 4
    save_checkpoint(d, 10, _parts(10))  # the leftovers of 6 and 8 are removed
    assert checkpoint_steps(d) == [4, 10]
    assert not list(d.glob("step_000000006.*")) and not list(d.glob("step_000000008.*"))
    with pytest.raises(ValueError, match="part name"):
        save_checkpoint(d, 12, {"a.b": {}})


def test_optimizer_state_round_trips_to_identical_steps() -> None:
    def run(resume_at: int | None) -> torch.Tensor:
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(5))
        opt = torch.optim.AdamW([w], lr=0.1)
        for i in range(6):
            if i == resume_at:
                saved, value = optimizer_tensors(opt), w.detach().clone()
                w = torch.nn.Parameter(value)
                opt = torch.optim.AdamW([w], lr=0.1)
                load_optimizer_tensors(opt, saved)
            opt.zero_grad()
            (w.sin() * (i + 1)).sum().backward()
            opt.step()
        return w.detach()

    assert torch.equal(run(None), run(3))


def test_fingerprint_is_keyed_on_content_and_names_what_changed(tmp_path: Path, caplog) -> None:
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, np.arange(10))
    np.save(b, np.arange(10))
    assert fingerprint({"x": 1, "y": [1, 2]}, [a]) == fingerprint({"y": (1, 2), "x": 1}, [b])
    assert fingerprint({"x": 1}, [a]) != fingerprint({"x": 2}, [a])
    before = file_digest(a)
    np.save(a, np.arange(10)[::-1])  # same size, same path, other bytes
    assert file_digest(a) != before

    fp_old = Fingerprint.of({"lr": 0.1, "steps": 4}, [b])
    ckpts = Checkpoints(tmp_path / "ckpt", fp_old, name="demo")
    ckpts.save(2, _parts(2))
    assert Checkpoints(tmp_path / "ckpt", fp_old).resume().step == 2
    with caplog.at_level(logging.WARNING, logger="saeprobe.training"):
        assert (
            Checkpoints(tmp_path / "ckpt", Fingerprint.of({"lr": 0.2, "steps": 4}, [b])).resume()
            is None
        )
    assert "settings changed (lr: 0.1 -> 0.2)" in caplog.text
    assert not (tmp_path / "ckpt").exists()  # discarded
    ckpts.save(2, _parts(2))
    np.save(b, np.arange(10) + 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saeprobe.training"):
        assert (
            Checkpoints(tmp_path / "ckpt", Fingerprint.of({"lr": 0.1, "steps": 4}, [b])).resume()
            is None
        )
    assert f"input {b} changed" in caplog.text and "settings" not in caplog.text


# -- the world trainers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig.from_dict({"splits": SPLITS}), out)
    return out


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A random-init world CLIP (32 px, context 16) in open_clip's format."""
    model, _, model_cfg = build_world_clip(WorldClipConfig.from_dict(CLIP), 32)
    out = tmp_path_factory.mktemp("clip")
    save_world_clip(model, model_cfg, out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _repaint(world_dir: Path) -> None:
    """Other pixels in the train split, same path, shape and size (the manifest unchanged)."""
    path = world_dir / "train" / "images.npy"
    np.save(path, 255 - np.load(path))


def _assert_same_weights(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    for f in files:
        x, y = load_file(a / f), load_file(b / f)
        assert x.keys() == y.keys(), f
        for k in x:
            assert torch.equal(x[k], y[k]), f"{f}: {k}"


def _kill_clip_at(done: int):
    def hook(step, model, tokenizer):
        if step + 1 == done:
            raise Killed

    return hook


def test_world_clip_resumes_bit_for_bit_and_restarts_on_new_pixels(world, tmp_path, caplog):
    cfg = WorldClipConfig.from_dict(CLIP)
    _, _, straight = train_world_clip(cfg, world, tmp_path / "straight", checkpoint_every=2)
    with pytest.raises(Killed):  # between the checkpoints at 2 and 4
        train_world_clip(cfg, world, tmp_path / "killed", _kill_clip_at(3), checkpoint_every=2)
    assert checkpoint_steps(tmp_path / "killed" / "checkpoint") == [2]
    with caplog.at_level(logging.INFO):
        _, _, resumed = train_world_clip(cfg, world, tmp_path / "killed", checkpoint_every=2)
    assert "resuming from the checkpoint at step 2" in caplog.text
    _assert_same_weights(tmp_path / "straight", tmp_path / "killed")
    assert resumed["losses"] == straight["losses"]
    assert not (tmp_path / "killed" / "checkpoint").exists()

    w = _copy(world, tmp_path / "w")
    with pytest.raises(Killed):
        train_world_clip(cfg, w, tmp_path / "changed", _kill_clip_at(5), checkpoint_every=2)
    _repaint(w)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_world_clip(cfg, w, tmp_path / "changed", checkpoint_every=2)
    assert "train/images.npy changed" in caplog.text and "resuming" not in caplog.text
    train_world_clip(cfg, w, tmp_path / "fresh", checkpoint_every=2)
    _assert_same_weights(tmp_path / "fresh", tmp_path / "changed")
    with pytest.raises(AssertionError):
        _assert_same_weights(tmp_path / "straight", tmp_path / "fresh")


DIFFUSION = WorldDiffusionConfig(
    vae_channels=(8, 16),
    vae_steps=4,
    vae_batch_size=8,
    unet_channels=(16, 32),
    attention_head_dim=4,
    unet_steps=5,
    batch_size=8,
    warmup_steps=2,
    checkpoint_every=2,
)


def _kill_diffusion_at(stage: str, done: int):
    def hook(name: str, steps_done: int) -> None:
        if (name, steps_done) == (stage, done):
            raise Killed

    return hook


def test_world_diffusion_resumes_bit_for_bit_and_restarts_on_new_inputs(
    world, clip_dir, tmp_path, caplog
):
    cfg = DIFFUSION
    straight = train_world_diffusion(cfg, world, clip_dir, tmp_path / "straight")
    killed = tmp_path / "killed"
    for stage, done in (("vae", 3), ("unet", 3)):  # a kill in each stage
        with pytest.raises(Killed):
            train_world_diffusion(cfg, world, clip_dir, killed, _kill_diffusion_at(stage, done))
    assert checkpoint_steps(tmp_path / "killed.partial" / "vae") == [2, 4]
    assert checkpoint_steps(tmp_path / "killed.partial" / "unet") == [2]
    with caplog.at_level(logging.INFO):
        resumed = train_world_diffusion(cfg, world, clip_dir, killed)
    assert "vae: resuming from the checkpoint at step 4" in caplog.text
    assert "unet: resuming from the checkpoint at step 2" in caplog.text
    _assert_same_weights(tmp_path / "straight", killed)
    assert resumed["unet_losses"] == straight["unet_losses"]
    assert resumed["scaling_factor"] == straight["scaling_factor"]
    assert not (tmp_path / "killed.partial").exists()

    # other CLIP weights at the same path: the VAE (which does not read them) resumes, the UNet
    # starts over
    clip2 = _copy(clip_dir, tmp_path / "clip2")
    with pytest.raises(Killed):
        train_world_diffusion(cfg, world, clip2, tmp_path / "c", _kill_diffusion_at("unet", 3))
    weights = load_file(clip2 / "open_clip_model.safetensors")
    atomic_save_tensors(
        clip2 / "open_clip_model.safetensors", {k: v * 1.5 for k, v in weights.items()}
    )
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_world_diffusion(cfg, world, clip2, tmp_path / "c")
    assert "vae: resuming from the checkpoint at step 4" in caplog.text
    assert "unet: discarding" in caplog.text
    assert "open_clip_model.safetensors changed" in caplog.text
    train_world_diffusion(cfg, world, clip2, tmp_path / "c_fresh")
    _assert_same_weights(tmp_path / "c_fresh", tmp_path / "c")

    # other pixels: both stages start over
    w = _copy(world, tmp_path / "w")
    with pytest.raises(Killed):
        train_world_diffusion(cfg, w, clip_dir, tmp_path / "p", _kill_diffusion_at("unet", 3))
    _repaint(w)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_world_diffusion(cfg, w, clip_dir, tmp_path / "p")
    assert "vae: discarding" in caplog.text and "unet: discarding" in caplog.text
    assert "resuming" not in caplog.text
    train_world_diffusion(cfg, w, clip_dir, tmp_path / "p_fresh")
    _assert_same_weights(tmp_path / "p_fresh", tmp_path / "p")


LLAVA = CaptionerConfig(
    text_steps=2,
    align_steps=2,
    steps=2,
    batch_size=16,
    warmup_steps=1,
    checkpoint_every=2,
    train_examples=48,
)
SPEC = TinyLlamaSpec(hidden=16, layers=1, heads=2, intermediate=32)


def test_world_llava_resumes_bit_for_bit_and_restarts_on_new_pixels(
    world, clip_dir, tmp_path, caplog
):
    _, _, straight = train_world_llava(LLAVA, SPEC, world, clip_dir, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):  # in the alignment stage, after the checkpoint at 2
        train_world_llava(LLAVA, SPEC, world, clip_dir, tmp_path / "killed", stop_after=3)
    assert checkpoint_steps(tmp_path / "killed" / "checkpoint") == [2]
    with caplog.at_level(logging.INFO):
        _, _, resumed = train_world_llava(LLAVA, SPEC, world, clip_dir, tmp_path / "killed")
    assert "resuming from the checkpoint at step 2" in caplog.text
    _assert_same_weights(tmp_path / "straight", tmp_path / "killed")
    assert resumed["losses"] == straight["losses"]
    assert not (tmp_path / "killed" / "checkpoint").exists()

    w = _copy(world, tmp_path / "w")
    with pytest.raises(KeyboardInterrupt):
        train_world_llava(LLAVA, SPEC, w, clip_dir, tmp_path / "changed", stop_after=5)
    assert checkpoint_steps(tmp_path / "changed" / "checkpoint") == [2, 4]
    _repaint(w)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_world_llava(LLAVA, SPEC, w, clip_dir, tmp_path / "changed")
    assert "train/images.npy changed" in caplog.text and "resuming" not in caplog.text
    train_world_llava(LLAVA, SPEC, w, clip_dir, tmp_path / "fresh")
    _assert_same_weights(tmp_path / "fresh", tmp_path / "changed")
