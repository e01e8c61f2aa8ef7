"""Cross-modal statistics on constructed codes whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from saeprobe.eval import crossmodal as cm

COLOURS = ["red", "blue", "green", "cyan"]
SHAPES = ["circle", "star", "cross"]
ATTRIBUTES = {**{c: "colour" for c in COLOURS}, **{s: "shape" for s in SHAPES}}


def noise(rng: np.random.Generator, width: int) -> np.ndarray:
    z = rng.exponential(0.05, width) * (rng.random(width) < 0.05)
    z[:8] = 0.0
    return z


def constructed(
    n_examples: int = 120, width: int = 24, planted: bool = True, seed: int = 0
) -> tuple[np.ndarray, pd.DataFrame, list[set[str]]]:
    """Codes (rows, width) for 4 image tokens + 3 caption words per example.

    Latent i (i < 4) is colour i's: with `planted` it fires on image tokens of images of that
    colour and on the text token of its word; latents 4..6 fire on shape words only (text
    only), latent 7 on every image token (image only); latents 8.. are sparse noise on both.
    Without `planted` the colour latents of images and words are unrelated (random latents).
    """
    rng = np.random.default_rng(seed)
    rows, codes, concepts = [], [], []
    for e in range(n_examples):
        colour, shape = COLOURS[e % 4], SHAPES[e % 3]
        concepts.append({colour, shape})
        for p in range(4):
            z = noise(rng, width)
            z[7] = 1.0
            latent = COLOURS.index(colour) if planted else rng.integers(8, width)
            z[latent] += 2.0
            rows.append({"example": e, "modality": "image", "position": p, "word": ""})
            codes.append(z)
        for p, word in enumerate(["a", colour, shape]):
            z = noise(rng, width)
            if word == colour:
                latent = COLOURS.index(colour) if planted else rng.integers(8, width)
                z[latent] += 2.0
            if word == shape:
                z[4 + SHAPES.index(shape)] += 1.5
            rows.append({"example": e, "modality": "text", "position": 5 + p, "word": word})
            codes.append(z)
    return np.array(codes), pd.DataFrame(rows), concepts


def sums_of(codes, tokens, concepts, chunk=50):
    chunks = (
        (torch.from_numpy(codes[i : i + chunk]), np.arange(i, min(i + chunk, len(codes))))
        for i in range(0, len(codes), chunk)
    )
    return cm.accumulate(chunks, tokens, concepts, sorted(ATTRIBUTES), codes.shape[1])


def test_latent_statistics_match_their_definitions():
    codes, tokens, concepts = constructed()
    sums = sums_of(codes, tokens, concepts)
    table = cm.latent_table(sums, fire_threshold=0.01).set_index("latent")
    img = tokens["modality"].to_numpy() == "image"
    for j in (0, 4, 7, 12):
        assert table.loc[j, "freq_img"] == pytest.approx((codes[img, j] > 0).mean())
        assert table.loc[j, "mass_txt"] == pytest.approx(codes[~img, j].mean())
    assert table.loc[7, "modality_score"] == pytest.approx(1.0)  # image only
    assert table.loc[4, "modality_score"] == pytest.approx(-1.0)  # shape words: text only
    assert table.loc[7, "shared"] == False  # noqa: E712
    assert table.loc[0, "shared"] == True  # noqa: E712
    # colour latents carry the same mass per token on both sides up to the token ratio
    mass_ratio = table.loc[0, "mass_img"] / table.loc[0, "mass_txt"]
    assert mass_ratio == pytest.approx(3.0, rel=0.15)  # every image token vs 1 word in 3
    summary = {r["metric"]: r["value"] for r in cm.summary_rows(table.reset_index(), 0.01)}
    assert 0 < summary["frac_shared"] < 1
    assert summary["frac_alive"] == pytest.approx(table["alive"].mean())


def test_example_max_and_word_means():
    codes, tokens, concepts = constructed(n_examples=12)
    sums = sums_of(codes, tokens, concepts, chunk=7)
    img = tokens["modality"].to_numpy() == "image"
    for e in (0, 5, 11):
        sel = img & (tokens["example"].to_numpy() == e)
        np.testing.assert_allclose(sums.example_max[e], codes[sel].max(0), rtol=1e-6)
    red = tokens["word"].to_numpy() == "red"
    i = sums.words.index("red")
    np.testing.assert_allclose(sums.word_sum[i] / sums.word_n[i], codes[red].mean(0))
    shown = cm.shared_examples(sums, [0], n_images=3, n_words=2)[0]
    assert shown["words"][0] == "red"
    assert all(e % 4 == 0 for e in shown["examples"])  # red images


def test_a_planted_shared_latent_is_found():
    codes, tokens, concepts = constructed(planted=True)
    sums = sums_of(codes, tokens, concepts)
    per_concept, summary = cm.concept_matching(sums, ATTRIBUTES, m=1, n_null=200, min_count=3)
    colours = per_concept[per_concept["attribute"] == "colour"].set_index("concept")
    assert (colours["overlap"] == 1.0).all()
    assert (colours["top1_shared"] == 1.0).all()
    for c in COLOURS:
        assert colours.loc[c, "img_latent"] == colours.loc[c, "txt_latent"] == COLOURS.index(c)
    assert (colours["null_value"] == 0.0).all()
    overall = next(r for r in summary if r["metric"] == "concept_overlap")
    assert overall["value"] > overall["null_hi"]
    assert overall["p_value"] < 0.05


def test_too_few_concepts_give_an_empty_table_with_the_same_columns():
    codes, tokens, concepts = constructed(planted=True)
    sums = sums_of(codes, tokens, concepts)
    full, _ = cm.concept_matching(sums, ATTRIBUTES, m=1, n_null=50, min_count=3)
    empty, summary = cm.concept_matching(sums, ATTRIBUTES, m=1, n_null=50, min_count=10**6)
    assert len(full) and list(full.columns) == list(cm.CONCEPT_COLUMNS)
    assert empty.empty and summary == []
    assert list(empty.columns) == list(cm.CONCEPT_COLUMNS)


def test_unrelated_latents_give_the_null():
    codes, tokens, concepts = constructed(planted=False)
    sums = sums_of(codes, tokens, concepts)
    per_concept, summary = cm.concept_matching(sums, ATTRIBUTES, m=3, n_null=500, min_count=3)
    colours = per_concept[per_concept["attribute"] == "colour"]
    overall = next(r for r in summary if r["metric"] == "concept_overlap")
    assert overall["null_lo"] <= overall["value"] <= overall["null_hi"]
    assert overall["p_value"] > 0.05
    assert colours["top1_shared"].sum() <= 1


def test_within_attribute_contrast_removes_the_word_slot():
    """A latent on every colour word (the template slot) must not be any colour's top latent."""
    codes, tokens, concepts = constructed(planted=True)
    slot = tokens["word"].isin(COLOURS).to_numpy()
    codes[slot, 20] += 5.0
    sums = sums_of(codes, tokens, concepts)
    _, d_txt = cm.concept_differences(sums, ATTRIBUTES)
    for c in COLOURS:
        i = sums.concepts.index(c)
        assert int(np.argmax(d_txt[i])) == COLOURS.index(c)


def test_derangements_have_no_fixed_points():
    p = cm.derangements(5, 100, np.random.default_rng(0))
    assert not (p == np.arange(5)).any()
    assert all(sorted(row) == list(range(5)) for row in p)


# -- nulls, the positive control and the verdicts --

from saeprobe.claims import FAILS, HOLDS, INCONCLUSIVE, judge  # noqa: E402


def summary_of(codes, tokens, concepts, n_null=300) -> pd.DataFrame:
    """The summary table evaluate_crossmodal writes (summary rows only) for constructed codes."""
    sums = sums_of(codes, tokens, concepts)
    _, rows = cm.concept_matching(sums, ATTRIBUTES, m=1, n_null=n_null, min_count=3)
    rows += cm.text_split_matching(sums, ATTRIBUTES, m=1, n_null=n_null, min_count=3)
    return pd.DataFrame(rows).assign(concept="")


def verdict(measured: pd.DataFrame, negative: pd.DataFrame | None) -> str:
    sites = ["llava/L0_all/topk", "llava/L0_all/other"]
    frames = [measured, measured]
    if negative is not None:
        sites.append("llava_shuffled/L0_all/topk")
        frames.append(negative)
    rows = cm.crossmodal_evidence(
        sites,
        frames,
        ["llava"],
        {"llava": "topk", "llava_shuffled": "topk"},
        {"llava": "llava_shuffled"},
    )
    evidence = pd.DataFrame(rows)
    assert set(evidence["case"]) >= {"measured", "positive", "sensitivity:other"}
    claims = judge(evidence)
    assert list(claims["site"]) == ["llava/L0_all"]
    return str(claims["verdict"].iloc[0])


def test_planted_sharing_holds_and_unrelated_latents_do_not():
    planted = summary_of(*constructed(planted=True))
    unrelated = summary_of(*constructed(planted=False, seed=1))
    assert verdict(planted, unrelated) == HOLDS
    # random codes on the measured side: the controls behave, the measured case fails
    assert verdict(unrelated, summary_of(*constructed(planted=False, seed=2))) == FAILS
    # no negative model (e.g. the paper config): never holds
    assert verdict(planted, None) == INCONCLUSIVE


def test_shuffled_concept_labels_never_hold():
    codes, tokens, concepts = constructed(planted=True)
    shuffled = [concepts[i] for i in np.random.default_rng(0).permutation(len(concepts))]
    measured = summary_of(codes, tokens, shuffled)
    negative = summary_of(*constructed(planted=False, seed=1))
    assert verdict(measured, negative) in (FAILS, INCONCLUSIVE)
    assert verdict(measured, negative) != HOLDS


def test_a_negative_that_is_the_measured_model_is_inconclusive():
    planted = summary_of(*constructed(planted=True))
    twin = summary_of(*constructed(planted=True, seed=3))  # "shuffled" but trained normally
    assert verdict(planted, twin) == INCONCLUSIVE


def test_the_text_split_positive_finds_word_latents_even_without_image_sharing():
    """Both sides word tokens: shared by construction, whatever the image tokens do."""
    rows = summary_of(*constructed(planted=False)).set_index("metric")
    assert rows.loc["text_split:concept_overlap", "value"] == 1.0
    assert rows.loc["text_split:concept_overlap", "p_value"] < 0.05
    assert rows.loc["text_split:concept_overlap_within_attribute", "p_value"] < 0.05
    assert rows.loc["concept_overlap", "p_value"] > 0.05


def test_group_derangements_stay_within_their_group():
    groups = ["a", "a", "a", "b", "b", "c"]
    p = cm.group_derangements(groups, 200, np.random.default_rng(0))
    g = np.array(groups)
    assert (g[p] == g[None, :]).all()
    assert not (p[:, :5] == np.arange(5)).any()  # every member of a group of >= 2 moves
    assert (p[:, 5] == 5).all()  # alone in its group: stays


def test_the_within_attribute_null_rejects_attribute_level_sharing():
    """Each concept's top latents are its attribute's block, the same for every concept of the
    attribute: shared across modalities, but not concept by concept. The shuffled-pairs null
    (mostly pairs of other attributes) is beaten; the within-attribute null is not."""
    names = [f"c{i}" for i in range(4)] + [f"s{i}" for i in range(4)]
    attributes = {n: ("colour" if n[0] == "c" else "shape") for n in names}
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.01, (8, 40))
    d[:4, 0:3] += 1.0  # colour block
    d[4:, 3:6] += 1.0  # shape block
    d_b = d + rng.normal(0, 0.01, d.shape)
    _, summary = cm.match_concepts(d, d_b, names, attributes, m=3, n_null=500)
    rows = {r["metric"]: r for r in summary}
    assert rows["concept_overlap"]["value"] == 1.0
    assert rows["concept_overlap"]["p_value"] < 0.05
    assert rows["concept_overlap_within_attribute"]["p_value"] == 1.0  # every draw ties


def test_the_within_attribute_null_accepts_concept_sharing():
    codes, tokens, concepts = constructed(planted=True)
    sums = sums_of(codes, tokens, concepts)
    _, summary = cm.concept_matching(sums, ATTRIBUTES, m=1, n_null=300, min_count=3)
    rows = {r["metric"]: r for r in summary}
    within = rows["concept_overlap_within_attribute"]
    assert within["p_value"] < 0.05
    assert within["value"] > within["null_hi"]


def test_a_tie_with_the_null_counts_as_extreme():
    """The observed value equal to every null draw gives p = 1, never a pass."""
    names = ["a", "b", "c"]
    d = np.zeros((3, 6))
    _, summary = cm.match_concepts(d, d, names, {n: "x" for n in names}, m=2, n_null=100)
    assert all(r["p_value"] == 1.0 for r in summary if "p_value" in r)


def _piece_tokenizer():
    """A tiny sentencepiece-style tokenizer: "giraffe" is two pieces, "gir" + "affe"."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    vocab = [("<unk>", 0.0), ("\u2581a", -1.0), ("\u2581gir", -2.0), ("affe", -2.0),
             ("\u2581red", -1.0), ("s", -3.0), ("\u2581", -5.0), (",", -2.0)]  # fmt: skip
    tok = Tokenizer(Unigram(vocab, unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_a_concept_split_into_pieces_is_matched_as_a_token_sequence():
    from saeprobe.backbones.mllm import piece_words

    tokenizer = _piece_tokenizer()
    captions = ["a red giraffe, a giraffes", "a red a"]
    rows, n = [], 0
    for e, caption in enumerate(captions):
        ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
        for p, w in enumerate(piece_words(tokenizer, ids)):
            rows.append({"example": e, "modality": "text", "position": 10 + p, "word": w})
        n += len(ids)
    tokens = pd.DataFrame(rows)
    assert tokens["word"].tolist()[:5] == ["a", "red", "gir", "##affe", ","]
    whole = cm.caption_words(
        tokens["example"].to_numpy(), tokens["position"].to_numpy(),
        tokens["word"].to_numpy(), np.ones(n, bool),
    )  # fmt: skip
    assert whole.tolist()[:9] == ["a", "red", "giraffe", "giraffe", ",", "a"] + ["giraffes"] * 3
    # codes: latent 0 fires on every piece of "giraffe", latent 1 on "red"
    codes = np.zeros((n, 2), np.float32)
    codes[np.isin(whole, ["giraffe", "giraffes"]), 0] = 1.0
    codes[whole == "red", 1] = 1.0
    sums = cm.accumulate(
        [(torch.from_numpy(codes), np.arange(n))], tokens, [{"giraffe"}, {"red"}],
        ["giraffe", "red"], width=2,
    )  # fmt: skip
    assert sums.concept_txt_n.tolist() == [5.0, 2.0]  # 2 + 3 pieces; the single-piece word twice
    np.testing.assert_allclose(sums.concept_txt_sum[0], [5.0, 0.0])
    # a tokenizer without word markers (the world's word-level one) marks no continuation
    ids = tokenizer("a giraffe", add_special_tokens=False)["input_ids"]
    assert piece_words(tokenizer, ids, markers=False) == ["a", "gir", "affe"]
