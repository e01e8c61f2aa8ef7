"""Ground truth on a small synthetic world: a tiny text-to-image model trained in the test.

The world's attributes are known, so attribute discovery must find colour latents and name them
with their colour, and steering towards a colour must raise that colour's pixel fraction. The
setting is scaled down to run in about a minute on 2 CPU cores: 1600 16-px train images in four
colours, a briefly trained world CLIP, a small VAE (16 px -> 4x4x4 latents) + UNet, captions
that name the colour often.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_backbones import collect_prompts

from saeprobe.data.prompts import world_captions
from saeprobe.diffusion.experiment import load_scorer, world_colours, world_vocabulary
from saeprobe.diffusion.pipeline import load_pipeline
from saeprobe.diffusion.steering import (
    AttributeJudge,
    GenSettings,
    discover_attributes,
    latent_stats,
    pick_latents,
    prompt_codes,
    run_steering,
    word_contrast,
)
from saeprobe.sae import SAEConfig, TrainConfig, train_sweep
from saeprobe.world.clip import train_world_clip
from saeprobe.world.config import WorldClipConfig, WorldConfig
from saeprobe.world.diffusion import WorldDiffusionConfig, train_world_diffusion
from saeprobe.world.generate import generate_world, load_vocab

COLOURS = ["red", "yellow", "green", "blue"]
CAPTIONS = {
    "caption_colour_p": 0.9,
    "caption_background_p": 0.2,
    "caption_superclass_p": 0.0,
    "caption_generic_p": 0.1,
    "caption_photo_p": 0.0,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("diffusion_world")
    wcfg = WorldConfig.from_dict(
        {
            "superclasses": {"polygon": ["triangle", "square"], "round": ["circle"]},
            "heldout_shapes": [],
            "colours": COLOURS,
            "backgrounds": ["plain"],
            "ood_backgrounds": ["checker"],
            "image_size": 16,
            "size_range": [0.35, 0.45],
            "splits": {"train": 1600},
        }
    )
    generate_world(wcfg, root / "world", splits=("train",))
    clip_cfg = WorldClipConfig.from_dict(
        {
            "embed_dim": 32,
            "vision_width": 32,
            "vision_layers": 1,
            "text_width": 32,
            "text_layers": 1,
            "steps": 150,
            "batch_size": 128,
            "warmup_steps": 10,
        }
    )
    train_world_clip(clip_cfg, root / "world", out_dir=root / "clip")
    dcfg = WorldDiffusionConfig(
        vae_channels=(8, 16, 32),
        vae_steps=150,
        unet_channels=(32, 64),
        unet_steps=800,
        batch_size=64,
        lr=0.002,
        checkpoint_every=0,
        **CAPTIONS,
    )
    train_world_diffusion(dcfg, root / "world", root / "clip", root / "pipe")
    pipe = load_pipeline(root / "pipe", "cpu")
    manifest = pd.read_csv(root / "world/train/manifest.csv", keep_default_na=False)
    prompts = world_captions(manifest, 1500, 0, CAPTIONS)
    acts, table = collect_prompts(root / "pipe", prompts, [0], "all")
    sae_dir = root / "sae"
    (sae,) = train_sweep(
        acts[0],
        [SAEConfig(arch="topk", width=32, k=2, name="topk")],
        TrainConfig(batch_size=256, epochs=4, lr=0.003, warmup_steps=5, init_sample_size=2048),
        [sae_dir],
        device="cpu",
        progress=False,
    )
    scorer = load_scorer({"source": "world"}, root / "clip", torch.device("cpu"))
    return {
        "root": root,
        "pipe": pipe,
        "sae": sae.eval(),
        "acts": acts[0],
        "table": table,
        "prompts": prompts,
        "scorer": scorer,
        "vocab": load_vocab(root / "world"),
    }


def test_colour_latents_are_discovered_and_named_by_their_colour(world: dict) -> None:
    sae, acts = world["sae"], world["acts"]
    _, typical = latent_stats(sae, acts)
    codes = prompt_codes(sae, acts, world["table"]["prompt"].to_numpy(), len(world["prompts"]))
    contrast = word_contrast(codes, world["prompts"], COLOURS)
    colour_latents = pick_latents(contrast, COLOURS)
    vocabulary, groups = world_vocabulary(world["vocab"])
    table, _ = discover_attributes(
        world["pipe"],
        sae,
        "world/L0_all/topk",
        list(dict.fromkeys(colour_latents.values())),
        typical,
        ["a shape"],
        [0, 1, 2, 3],
        6.0,
        GenSettings(layer=0, steps=10, guidance_scale=4.0),
        world["scorer"],
        vocabulary,
        min_consistency=0.5,
        min_effect=0.0,
        groups=groups,
    )
    named = dict(zip(table["latent"], table["attribute"], strict=True))
    kept = dict(zip(table["latent"], table["kept"], strict=True))
    correct = [c for c, lat in colour_latents.items() if named[lat] == c and kept[lat]]
    assert len(correct) >= 3, (colour_latents, table.to_dict("records"))


def test_the_attribute_judge_names_the_colour_a_rendering_gains(world: dict) -> None:
    """Ground truth for the judge of attribute discovery: pairs of real renderings of one shape
    in two colours. The judge must name the second colour; fed texts shuffled among the
    colours (a broken vocabulary) it must not."""
    images = np.load(world["root"] / "world/train/images.npy")
    manifest = pd.read_csv(world["root"] / "world/train/manifest.csv", keep_default_na=False)
    rng = np.random.default_rng(0)
    first = rng.choice(len(manifest), 150, replace=False)
    second = []
    for i in first:
        same_shape = manifest["shape"] == manifest["shape"].iloc[i]
        other = np.flatnonzero(same_shape & (manifest["colour"] != manifest["colour"].iloc[i]))
        second.append(int(rng.choice(other)))
    truth = manifest["colour"].to_numpy()[second]
    emb = world["scorer"].images(images)
    vocabulary, groups = world_vocabulary(world["vocab"])
    shuffled = dict(vocabulary) | {
        c: vocabulary[d] for c, d in zip(COLOURS, COLOURS[1:] + COLOURS[:1], strict=True)
    }

    def accuracy(vocab: dict[str, str]) -> float:
        judge = AttributeJudge(world["scorer"], vocab, groups)
        gained = judge.change(emb[second], emb[first]).argmax(1).numpy()
        return float(np.mean(np.asarray(judge.attrs)[gained] == truth))

    assert accuracy(vocabulary) >= 0.9
    assert accuracy(shuffled) <= 0.2


def test_steering_towards_a_colour_raises_that_colour(world: dict) -> None:
    sae, acts = world["sae"], world["acts"]
    _, typical = latent_stats(sae, acts)
    codes = prompt_codes(sae, acts, world["table"]["prompt"].to_numpy(), len(world["prompts"]))
    contrast = word_contrast(codes, world["prompts"], COLOURS)
    picks = pick_latents(contrast, COLOURS)
    concepts = {
        c: {
            "latent": picks[c],
            "typical": float(typical[picks[c]]),
            "text": f"a photo of a {c} shape",
        }
        for c in COLOURS
    }
    table, _ = run_steering(
        world["pipe"],
        sae,
        "world/L0_all/topk",
        concepts,
        ["a shape", "a square"],
        [0, 1, 2],
        [0, 6],
        GenSettings(layer=0, steps=10, guidance_scale=4.0),
        world["scorer"],
        world_colours(world["vocab"]),
    )
    strong = table[table["strength"] == 6].groupby("concept")[["colour_effect", "effect"]].mean()
    assert (strong["colour_effect"] > 0.05).sum() >= 3, strong
    assert strong["colour_effect"].mean() > 0.1, strong
    assert (strong["effect"] > 0).sum() >= 3, strong
    assert np.allclose(table.loc[table["strength"] == 0, "colour_effect"], 0)


def test_trained_pipeline_is_a_saved_stable_diffusion(world: dict) -> None:
    root: Path = world["root"]
    assert (root / "pipe/model_index.json").is_file()
    assert not (root / "pipe.partial").exists()
    assert world["pipe"].vae.config.scaling_factor != 0.18215
