"""The crossmodal text-only control: caption tokens run without their image, on constructed
codes whose answer is known and through the extraction of tiny LLaVAs (the hub loading path)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_backbones import save_tiny_open_clip, single_thread

from saeprobe.activations import ActivationStore, extract
from saeprobe.claims import judge
from saeprobe.eval import crossmodal as cm
from saeprobe.plots.crossmodal import plot_concept_overlap
from saeprobe.sae import SAEConfig, build_sae, save_sae
from saeprobe.sae.site import MODALITY_SCALE
from saeprobe.world.config import WorldConfig
from saeprobe.world.generate import generate_world
from saeprobe.world.hf_vision import world_clip_vision_model
from saeprobe.world.llava import world_words
from saeprobe.world.llava_model import TinyLlamaSpec, build_processor, build_world_llava

COLOURS = ["red", "blue", "green", "cyan"]
SHAPES = ["circle", "star", "cross"]
ATTRIBUTES = {**{c: "colour" for c in COLOURS}, **{s: "shape" for s in SHAPES}}
CONCEPTS = sorted(ATTRIBUTES)
GENERIC = 8  # the latent a colour word fires on when it cannot see the image


def caption_codes(
    with_image: bool, text_carried: bool, n_examples: int = 120, width: int = 24, seed: int = 0
) -> tuple[np.ndarray, pd.DataFrame, list[set[str]]]:
    """Codes (rows, width) of 4 image tokens (with_image) + the caption "a <colour> <shape>".

    Latent i < 4 is colour i's: it fires on the image tokens of that colour and, with the image,
    on the colour word. Without the image the colour word fires latent i when `text_carried`
    (the word itself carries the colour) and the generic latent 8 otherwise (the colour came
    only from attending to the image). Latents 4..6: shape words; 9..: sparse noise.
    """
    rng = np.random.default_rng(seed)
    rows, codes, concepts = [], [], []
    for e in range(n_examples):
        colour, shape = COLOURS[e % 4], SHAPES[e % 3]
        concepts.append({colour, shape})
        for p in range(4 if with_image else 0):
            z = _noise(rng, width)
            z[COLOURS.index(colour)] += 2.0
            rows.append({"example": e, "modality": "image", "position": p, "word": ""})
            codes.append(z)
        for p, word in enumerate(["a", colour, shape]):
            z = _noise(rng, width)
            if word == colour:
                z[COLOURS.index(colour) if with_image or text_carried else GENERIC] += 2.0
            if word == shape:
                z[4 + SHAPES.index(shape)] += 1.5
            rows.append({"example": e, "modality": "text", "position": 5 + p, "word": word})
            codes.append(z)
    return np.array(codes), pd.DataFrame(rows), concepts


def _noise(rng: np.random.Generator, width: int) -> np.ndarray:
    z = rng.exponential(0.05, width) * (rng.random(width) < 0.05)
    z[:9] = 0.0
    return z


def _sums(codes: np.ndarray, tokens: pd.DataFrame, concepts: list[set[str]]) -> cm.CrossmodalSums:
    chunks = [(torch.from_numpy(codes), np.arange(len(codes)))]
    return cm.accumulate(chunks, tokens, concepts, CONCEPTS, codes.shape[1])


def control(text_carried: bool) -> tuple[dict, dict, pd.DataFrame]:
    """(with-image summary, text-only summary, latents) of the constructed model."""
    sums = _sums(*caption_codes(with_image=True, text_carried=text_carried))
    alone = _sums(*caption_codes(with_image=False, text_carried=text_carried, seed=1))
    latents = cm.latent_table(sums, 0.01)
    per_concept, measured = cm.concept_matching(sums, ATTRIBUTES, m=1, n_null=300, min_count=3)
    latents, _, rows = cm.text_only_control(
        sums, alone, latents, ATTRIBUTES, list(per_concept["concept"]), 1, 300, 0.01
    )
    return {r["metric"]: r for r in measured}, {r["metric"]: r for r in rows}, latents


def test_the_control_tells_text_carried_sharing_from_image_attending_sharing():
    for text_carried in (True, False):
        measured, alone, latents = control(text_carried)
        # with the image both models share every colour latent: the measurement cannot tell
        assert measured["concept_overlap"]["p_value"] < 0.05
        colour_latents = latents.set_index("latent").loc[range(4)]
        assert colour_latents["shared"].all()
        if text_carried:
            assert alone["text_only:concept_retained"]["value"] == 1.0
            assert alone["text_only:concept_overlap"]["p_value"] < 0.05
            assert colour_latents["text_only_retained"].to_numpy() == pytest.approx(1.0, rel=0.2)
        else:  # not text-carried: nothing of the colour latents' word activation remains
            assert alone["text_only:concept_retained"]["value"] == 0.0
            assert alone["text_only:concept_overlap"]["p_value"] > 0.05
            assert (colour_latents["text_only_retained"] == 0.0).all()
            assert alone["text_only:frac_shared_persist"]["value"] < 1.0
        assert 0.0 <= alone["text_only:mass_retained"]["value"]


def test_the_control_is_reported_beside_the_verdict_and_never_changes_it():
    summaries = []
    for text_carried in (True, False):
        measured, alone, _ = control(text_carried)
        rows = [{**r, "concept": ""} for r in [*measured.values(), *alone.values()]]
        summaries.append(pd.DataFrame(rows))
    with_alone = cm.crossmodal_evidence(
        ["m/L0_all/sae", "n/L0_all/sae"], summaries, ["m", "n"], {"m": "sae", "n": "sae"}, {}
    )
    ev = pd.DataFrame(with_alone)
    reported = ev[ev["case"] == cm.TEXT_ONLY_CASE].set_index(["site", "statistic"])["value"]
    assert reported[("m/L0_all", "concept_retained")] == 1.0
    assert reported[("n/L0_all", "concept_retained")] == 0.0
    without = pd.DataFrame([r for r in with_alone if r["case"] != cm.TEXT_ONLY_CASE])
    pd.testing.assert_frame_equal(judge(ev), judge(without))


@pytest.fixture(scope="module")
def tiny_llavas(tmp_path_factory):
    """A world test split and two tiny LLaVAs saved like hub checkpoints: `attends` (random)
    and `blind` (every attention output zeroed: a caption token sees nothing but itself)."""
    root = tmp_path_factory.mktemp("text_only")
    splits = {"train": 8, "test": 24, "ood_shape": 2, "ood_texture": 2}
    splits |= {"shift_outline": 2, "shift_noise": 2, "ood_near": 2, "ood_far": 2, "id_fresh": 2}
    generate_world(WorldConfig.from_dict({"splits": splits}), root / "world")
    vision = world_clip_vision_model(save_tiny_open_clip(root / "clip"))
    processor = build_processor(world_words(root / "world"), 16, 4, "default")
    spec = TinyLlamaSpec(hidden=16, layers=2, heads=2, intermediate=32)
    for name in ("attends", "blind"):
        model = build_world_llava(vision, processor, spec, seed=0).eval()
        if name == "blind":
            for layer in model.model.language_model.layers:
                torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        model.save_pretrained(root / name, safe_serialization=True)
        processor.save_pretrained(root / name)
    with single_thread():
        for name in ("attends", "blind"):
            for text_only in (False, True):
                extract(
                    {"source": "world_pairs", "root": str(root / "world"), "split": "test",
                     "text_only": text_only},
                    {"source": "llava", "name": str(root / name), "layers": [1]},
                    root / "acts" / name / ("text" if text_only else "pairs"),
                    batch_size=8, dtype="float32", device="cpu", progress=False,
                )  # fmt: skip
    return root


def _stores(root: Path, name: str) -> tuple[ActivationStore, ActivationStore]:
    acts = root / "acts" / name
    return ActivationStore(acts / "pairs" / "L1_all"), ActivationStore(acts / "text" / "L1_all")


def test_text_only_extraction_holds_the_same_caption_tokens_without_the_image(tiny_llavas):
    pairs, text = _stores(tiny_llavas, "attends")
    assert text.dataset_info()["text_only"] is True
    assert not pairs.dataset_info().get("text_only", False)
    with_image, alone = pairs.rows(), text.rows()
    assert (alone["modality"] == "text").all() and (with_image["modality"] == "image").any()
    captions = with_image[with_image["modality"] == "text"].reset_index(drop=True)
    for column in ("example", "token_id", "word"):
        assert captions[column].tolist() == alone[column].tolist()
    # the prompt loses its image tokens: every caption token sits that many places earlier
    shift = captions["position"].to_numpy() - alone["position"].to_numpy()
    n_image = (with_image["modality"] == "image").sum() / with_image["example"].nunique()
    assert n_image == 16 and (shift == n_image).all()  # 16 px, patch 4


def _caption_rows(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    pairs, text = _stores(root, name)
    is_text = (pairs.rows()["modality"] == "text").to_numpy()
    return pairs.read_all()[is_text], text.read_all()


def test_caption_rows_without_the_image_change_only_where_captions_attend(tiny_llavas):
    with_image, alone = _caption_rows(tiny_llavas, "blind")
    np.testing.assert_allclose(alone, with_image, atol=1e-5)
    with_image, alone = _caption_rows(tiny_llavas, "attends")
    assert np.abs(alone - with_image).max() > 1e-3


def _sae(root: Path, d_in: int) -> Path:
    sae = build_sae(SAEConfig(arch="relu", width=32, k=None, l1=0.0), d_in)
    sae.initialize(seed=0)
    out = save_sae(sae, root / "sae")
    (out / MODALITY_SCALE).write_text(json.dumps({"normalize": False, "image": 1.0, "text": 1.0}))
    return out


def test_the_control_through_the_stores_and_a_wrong_store_is_refused(tiny_llavas, tmp_path):
    out = {k: tmp_path / f"{k}.x" for k in ("summary", "latents", "concepts", "shared")}
    out["thumbnails"] = tmp_path / "thumbnails.npy"
    retained = {}
    for name in ("blind", "attends"):
        pairs, text = _stores(tiny_llavas, name)
        sae = _sae(tmp_path / name, pairs.dim)
        table = cm.evaluate_crossmodal(
            sae, pairs.path, out, top_m=2, n_null=20, min_count=1, text_only_dir=text.path
        )
        rows = table[table["concept"] == ""].set_index("metric")["value"]
        retained[name] = rows["text_only:mass_retained"]
        latents = pd.read_csv(out["latents"])
        assert {"freq_txt_text_only", "mass_txt_text_only", "text_only_retained"} <= set(latents)
        concepts = pd.read_csv(out["concepts"])
        assert "overlap_text_only" in concepts.columns
    plot_concept_overlap(["attends/L1_all/sae"], [concepts], [tmp_path / "c.png"], [table])
    assert (tmp_path / "c.png").stat().st_size > 0
    assert retained["blind"] == pytest.approx(1.0, abs=1e-4)
    assert not math.isclose(retained["attends"], 1.0, abs_tol=1e-3)
    with pytest.raises(ValueError, match="expected a text-only extraction"):
        cm.evaluate_crossmodal(sae, pairs.path, out, n_null=20, text_only_dir=pairs.path)


def _drop_control(c: dict) -> None:
    c["mllm"].pop("text_only")
    c["datasets"]["world_pairs_test_text"].pop("text_only")


def _config(root: Path) -> tuple[dict, Path]:
    import yaml

    return yaml.safe_load((root / "config.yaml").read_text()), root / "schemas/config.schema.yaml"


def test_the_text_only_control_is_optional(root):
    from saeprobe.config import validate_config

    config, schema = _config(root)
    assert validate_config(config, schema)["mllm"]["text_only"]
    config, _ = _config(root)
    _drop_control(config)
    assert validate_config(config, schema)["mllm"]["text_only"] == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["datasets"]["world_test"].update(text_only=True),
            r"'datasets.world_test.text_only': only image \+ caption pairs",
        ),
        (
            lambda c: c["datasets"]["world_pairs_test_text"].update(text_only="yes"),
            r"datasets.world_pairs_test_text.text_only",
        ),
        (
            lambda c: c["mllm"]["text_only"].update(world_llava_shuffled="world_pairs_test_text"),
            r"'mllm.text_only.world_llava_shuffled': 'world_llava_shuffled' is not in mllm.models",
        ),
        (
            lambda c: c["mllm"]["text_only"].update(world_llava="world_pairs_test"),
            r"'world_pairs_test' must be a dataset under 'datasets' with text_only: true",
        ),
        (
            lambda c: c["extract"]["datasets"]["world_llava"].remove("world_pairs_test_text"),
            r"'mllm.text_only.world_llava': 'world_pairs_test_text' is not in extract.datasets",
        ),
        (
            lambda c: c["datasets"]["world_pairs_test_text"].update(max_examples=10),
            r"'mllm.text_only.world_llava': .* differ in max_examples: 10 vs 1000",
        ),
    ],
)
def test_a_bad_text_only_control_names_the_key(root, change, message):
    from saeprobe.config import ConfigError, validate_config

    config, schema = _config(root)
    change(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, schema)
