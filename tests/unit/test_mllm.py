"""The multimodal-LLM stage: world CLIP -> HF conversion, the tiny LLaVA (build, save/load,
processor, training with resume), token extraction, and a ground-truth crossmodal run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_backbones import open_clip_block_outputs, save_tiny_open_clip

from saeprobe.activations import ActivationStore, extract
from saeprobe.backbones.mllm import PROMPT, image_features_per_image, load_mllm
from saeprobe.data.pairs import world_examples
from saeprobe.world.clip import images_to_tensor, load_world_clip, save_world_clip
from saeprobe.world.config import WorldConfig
from saeprobe.world.generate import generate_world, load_split
from saeprobe.world.hf_vision import (
    vision_model_from_open_clip,
    world_clip_vision_model,
)
from saeprobe.world.llava import CaptionerConfig, caption_accuracy, train_world_llava, world_words
from saeprobe.world.llava_model import (
    TinyLlamaSpec,
    build_processor,
    build_world_llava,
)

WORLD_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 16,
        "mlp_ratio": 4.0,
    },
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("mllm_world")
    splits = {"train": 2048, "test": 400, "ood_shape": 8, "ood_texture": 8}
    splits |= {"shift_outline": 8, "shift_noise": 8}
    generate_world(WorldConfig.from_dict({"splits": splits}), out)
    return out


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A random-init CLIP with the world CLIP's layout (32 px, patch 16), in open_clip's format."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=WORLD_CLIP_CFG["embed_dim"],
        vision_cfg=WORLD_CLIP_CFG["vision_cfg"],
        text_cfg=WORLD_CLIP_CFG["text_cfg"],
    ).eval()
    out = tmp_path_factory.mktemp("world_clip")
    save_world_clip(model, WORLD_CLIP_CFG, out)
    return out


def test_hf_vision_equals_open_clip_per_block_on_world_images(world, clip_dir):
    model, _, _ = load_world_clip(clip_dir)
    hf = world_clip_vision_model(clip_dir)
    images, _ = load_split(world, "test", mmap=True)
    x = images_to_tensor(images[:32])
    ref = open_clip_block_outputs(model.visual, x)
    with torch.no_grad():
        out = hf(pixel_values=x, output_hidden_states=True)
        pooled = model.visual.ln_post(ref[-1][:, 0])
        # the reference stream is open_clip's own: it reproduces encode_image exactly
        torch.testing.assert_close(pooled @ model.visual.proj, model.encode_image(x))
    assert len(out.hidden_states) == len(ref) == 3
    for a, b in zip(ref, out.hidden_states, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, pooled, atol=1e-5, rtol=1e-5)


def test_conversion_of_another_geometry(tmp_path):
    path = save_tiny_open_clip(tmp_path / "tiny")
    model, _, _ = load_world_clip(path)
    hf = world_clip_vision_model(path)
    x = torch.randn(4, 3, 16, 16)
    ref = open_clip_block_outputs(model.visual, x)
    with torch.no_grad():
        out = hf(pixel_values=x, output_hidden_states=True).hidden_states
    assert hf.config.num_attention_heads == 2 and hf.config.hidden_act == "gelu"
    for a, b in zip(ref, out, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_quick_gelu_tower_is_refused(clip_dir):
    model, _, _ = load_world_clip(clip_dir)
    model.visual.transformer.resblocks[0].mlp.gelu = torch.nn.GELU(approximate="tanh")
    with pytest.raises(ValueError, match="exact GELU"):
        vision_model_from_open_clip(model.visual, WORLD_CLIP_CFG["vision_cfg"])


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_tiny_llava_round_trip_and_image_token_count(world, clip_dir, tmp_path, strategy):
    vision = world_clip_vision_model(clip_dir)
    processor = build_processor(world_words(world), 32, 16, strategy)
    spec = TinyLlamaSpec(hidden=32, layers=2, heads=2, intermediate=64)
    spec = TinyLlamaSpec(**{**spec.__dict__, "vision_feature_select_strategy": strategy})
    model = build_world_llava(vision, processor, spec, seed=0).eval()
    images, manifest = load_split(world, "test", mmap=True)
    pil = [Image.fromarray(np.asarray(images[i])) for i in range(3)]
    batch = processor(images=pil, text=[f"{PROMPT} {c}" for c in manifest["caption"][:3]])
    ids = torch.tensor(batch["input_ids"])
    n_image = (ids == model.config.image_token_id).sum(1)
    expected = 4 + (strategy == "full")
    assert image_features_per_image(model) == expected
    assert n_image.tolist() == [expected] * 3
    feats = model.get_image_features(pixel_values=torch.tensor(np.array(batch["pixel_values"])))
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    assert sum(f.shape[0] for f in feats) == 3 * expected
    model.save_pretrained(tmp_path, safe_serialization=True)
    processor.save_pretrained(tmp_path)
    loaded, loaded_proc = load_mllm(tmp_path)
    again = loaded_proc(images=pil, text=[f"{PROMPT} {c}" for c in manifest["caption"][:3]])
    assert again["input_ids"] == batch["input_ids"]
    inputs = {k: torch.tensor(np.array(v)) for k, v in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)
    # the vision tower is the converted world CLIP, untouched by the round trip
    state = loaded.model.vision_tower.state_dict()
    for k, v in vision.state_dict().items():
        torch.testing.assert_close(state[k], v)


def _extract(model_dir, world, split, layers, out, max_examples=None, batch_size=256):
    """The shared extraction of a saved LLaVA on world image + caption pairs."""
    extract(
        {"source": "world_pairs", "root": str(world), "split": split, "max_examples": max_examples},
        {"source": "llava", "name": str(model_dir), "layers": layers},
        out,
        batch_size=batch_size,
        dtype="float32",
        device="cpu",
        progress=False,
    )
    return out


def test_extraction_records_modality_word_and_positions(world, clip_dir, tmp_path):
    vision = world_clip_vision_model(clip_dir)
    processor = build_processor(world_words(world), 32, 16, "default")
    spec = TinyLlamaSpec(hidden=32, layers=2, heads=2, intermediate=64)
    model = build_world_llava(vision, processor, spec, seed=0).eval()
    model.save_pretrained(tmp_path / "llava", safe_serialization=True)
    processor.save_pretrained(tmp_path / "llava")
    examples = world_examples(world, "test", 5, seed=0)
    _extract(tmp_path / "llava", world, "test", [0, 1], tmp_path / "acts", 5, batch_size=2)
    store = ActivationStore(tmp_path / "acts" / "L1_all")
    tokens = store.rows()
    # sequence: <s> USER: <image>x4 ASSISTANT: a <colour> <shape> on a <bg> background
    for e, caption in enumerate(examples.table["caption"]):
        rows = tokens[tokens["example"] == e]
        img = rows[rows["modality"] == "image"]
        txt = rows[rows["modality"] == "text"]
        assert img["position"].tolist() == [2, 3, 4, 5]
        assert (img["word"] == "").all()
        assert txt["word"].tolist() == caption.split()
        assert txt["position"].tolist() == list(range(7, 7 + len(caption.split())))
    # the stored rows are the hidden states at those positions
    batch = processor(images=[examples.image(0)], text=[f"{PROMPT} {examples.table.caption[0]}"])
    inputs = {k: torch.tensor(np.array(v)) for k, v in batch.items()}
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    first = tokens.index[tokens["example"] == 0]
    pos = tokens.loc[first, "position"].to_numpy()
    for layer in (0, 1):
        acts = ActivationStore(tmp_path / "acts" / f"L{layer}_all").read_all()
        np.testing.assert_allclose(acts[first], hidden[layer + 1][0, pos].numpy(), atol=1e-5)
    assert store.dim == 32 and (tokens["modality"] == "image").sum() == 20
    assert set(store.dataset_info()["attributes"]) >= set(examples.table["colour"])
    assert len(store.examples()) == 5 and store.thumbnails().shape == (5, 64, 64, 3)


def test_training_resumes_after_a_kill(world, clip_dir, tmp_path):
    cfg = CaptionerConfig(
        text_steps=2, align_steps=2, steps=2, batch_size=16, checkpoint_every=2, train_examples=64
    )
    spec = TinyLlamaSpec(hidden=16, layers=1, heads=2, intermediate=32)
    straight = tmp_path / "straight"
    train_world_llava(cfg, spec, world, clip_dir, straight)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train_world_llava(cfg, spec, world, clip_dir, killed, stop_after=3)
    assert (killed / "checkpoint" / "step_000000002.json").exists()
    assert not (killed / "model.safetensors").exists()
    train_world_llava(cfg, spec, world, clip_dir, killed)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert not (killed / "checkpoint").exists()


def test_ground_truth_colour_concepts_beat_the_null(world, clip_dir, tmp_path):
    """Train a small world LLaVA (text, then projector-only alignment), extract, train a mixture
    SAE and check that colour concepts match across modalities more than shuffled pairs."""
    from saeprobe.data.pairs import concept_sets
    from saeprobe.eval import crossmodal as cm
    from saeprobe.sae import load_sae
    from saeprobe.sae.site import train_site

    torch.set_num_threads(1)
    cfg = CaptionerConfig(text_steps=250, align_steps=350, steps=0, batch_size=64)
    spec = TinyLlamaSpec(hidden=64, layers=2, heads=4, intermediate=128)
    model, processor, _ = train_world_llava(cfg, spec, world, clip_dir, tmp_path / "llava")
    test = world_examples(world, "test", None, seed=0)
    acc = caption_accuracy(model, processor, test, "test").set_index("attribute")["accuracy"]
    assert acc["colour"] > 0.6  # chance 1/8
    for split in ("train", "test"):
        _extract(tmp_path / "llava", world, split, [0], tmp_path / split)
    train_site(
        tmp_path / "train" / "L0_all",
        tmp_path / "test" / "L0_all",
        {"topk": tmp_path / "sae"},
        {"topk": {"arch": "topk", "width": 128, "k": 8}},
        {"batch_size": 256, "epochs": 3, "warmup_steps": 10, "init_sample_size": 2048},
        tmp_path / "sweep.json",
        normalize_modalities=True,
    )
    out = {n: tmp_path / "eval" / n for n in ("summary", "latents", "concepts", "shared")}
    out["thumbnails"] = tmp_path / "eval" / "thumbnails.npy"
    table = cm.evaluate_crossmodal(tmp_path / "sae", tmp_path / "test" / "L0_all", out)
    colour = table[(table["metric"] == "concept_overlap[colour]")].iloc[0]
    assert colour["value"] > colour["null_value"] + 0.05, table.to_string()
    # the permutation test restricted to the concepts the captioner learned (colours)
    sae = load_sae(tmp_path / "sae")
    scales = json.loads((tmp_path / "sae" / "modality_scale.json").read_text())
    store = ActivationStore(tmp_path / "test" / "L0_all")
    colours = {c: a for c, a in store.dataset_info()["attributes"].items() if a == "colour"}
    x = store.read_all() / store.row_divisors(scales)[:, None]
    sums = cm.accumulate(
        cm._code_chunks(sae, x),
        store.rows(),
        concept_sets(store.examples()),
        sorted(colours),
        sae.cfg.width,
    )
    per_concept, summary = cm.concept_matching(sums, colours, m=5, n_null=1000)
    assert len(per_concept) == 8
    overlap = summary[0]
    assert overlap["metric"] == "concept_overlap"
    assert overlap["value"] > overlap["null_hi"] and overlap["p_value"] < 0.05, summary


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["mllm"].update(colour=1), r"unknown key\(s\) \['mllm.colour'\] in 'mllm'"),
        (
            lambda c: c["sae"]["overrides"]["world_llava"]["sweep"]["topk-w256-k8"].update(widht=8),
            r"unknown key\(s\) \['sae.overrides.world_llava.sweep.topk-w256-k8.widht'\]",
        ),
        (
            lambda c: c["sae"]["overrides"]["world_llava"].update(eval_dataset="nope"),
            r"'sae.overrides.world_llava.eval_dataset': 'nope' is not extracted",
        ),
        (lambda c: c["models"]["world_llava"].update(layers=[5]), r"models.world_llava.layers"),
        (
            lambda c: c["sae"]["overrides"]["world_llava"]["sweep"]["topk-w256-k8"].pop("k"),
            r"'sae.overrides.world_llava.sweep.topk-w256-k8.k': arch topk needs k",
        ),
        (lambda c: c["mllm"].update(models=["world_clip"]), r"'mllm.models\[0\]'"),
        (
            lambda c: c["mllm"].update(negatives={"world_llava": "world_llava"}),
            r"'mllm.negatives.world_llava': 'world_llava' must be a world_llava model",
        ),
        (
            lambda c: c["models"]["world_clip"].update(shuffle_captions=True),
            r"'models.world_clip.shuffle_captions'",
        ),
        (
            lambda c: c["sae"]["sites"].update(world_llava_shuffled=["L0_all"]),
            r"'sae.sites.world_llava_shuffled' must equal 'sae.sites.world_llava'",
        ),
    ],
)
def test_bad_mllm_config_names_the_key(root, change, message):
    import copy

    import yaml

    from saeprobe.config import ConfigError, validate_config

    config = copy.deepcopy(yaml.safe_load((root / "config.yaml").read_text()))
    change(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, root / "schemas" / "config.schema.yaml")
