"""Cross-modal statistics of one SAE trained on a mixture of image-token and text-token
activations: which latents are shared by vision and language, and do concepts line up.

Notation: z_j(t) >= 0 is latent j's code on token t; I = the image tokens, T = the text
(caption) tokens of the evaluation set; tau = `fire_threshold`.

Per latent (`latent_table`):

* freq_img = |{t in I: z_j(t) > 0}| / |I|, freq_txt likewise on T (activation frequency);
* mass_img = sum_{t in I} z_j(t) / |I|, mass_txt likewise: the mean code per token of each
  modality, i.e. the mass on a frequency-balanced sample (equal numbers of image and text
  tokens), so the two modalities' different token counts do not bias it;
* modality_score = (mass_img - mass_txt) / (mass_img + mass_txt) in [-1, 1]: +1 image only,
  -1 text only, NaN for latents that never fire;
* alive = fires on at least one token; shared = freq_img > tau and freq_txt > tau.

Summary (`summary_rows`): frac_alive, frac_shared = shared / alive, frac_image_only and
frac_text_only (alive latents above tau on one modality only), mean |modality_score|.

The activations' norms differ between modalities (image tokens of LLaVA are several times
larger); with `sae.overrides.<model>.normalize_modalities` each modality is divided by its mean
norm on the SAE's training set before training and evaluating (the SAE's modality_scale.json),
so one modality cannot own the dictionary by norm.

Concept matching (`concept_matching`), for every concept c (an image label that also occurs
as a caption word, e.g. a colour or a shape name):

* D_img[c, j] = mean of z_j over image tokens of examples whose image has c
  - mean of z_j over image tokens of examples without c;
* D_txt[c, j] = mean of z_j over text tokens whose word is c (or c + "s"; a word the
  tokenizer split into several pieces counts with all its tokens, `caption_words`)
  - mean of z_j over text tokens whose word is another concept of c's attribute (e.g. "red"
  against the other colour words; all other text tokens when c's attribute has no other
  concept). Contrasting within the attribute removes what all words of a kind share (their
  slot in the caption template), which would otherwise dominate every colour's top latents;
* I_c, T_c = the top-m latents of D_img[c] and D_txt[c];
* overlap(c) = |I_c ∩ T_c| / m; top1_shared(c) = 1 if argmax_j D_img[c] == argmax_j D_txt[c];
* null model: the same quantities for shuffled concept pairs, O[c, c'] = |I_c ∩ T_c'| / m for
  c' != c. Per concept, null_value is the mean over c' != c with a 2.5-97.5 % band; for the
  summary, `n_null` random derangements pi give mean_c O[c, pi(c)], whose mean, band and the
  one-sided permutation p-value (1 + #{null >= observed}) / (1 + n_null) are reported (a null
  draw equal to the observed value counts as extreme: a tie is no evidence);
* within-attribute null (`concept_overlap_within_attribute`): the derangements pi only swap
  concepts of the same attribute (red <-> blue, never red <-> circle), over the concepts whose
  attribute has at least two of them. It asks whether the image latents of red are those of the
  word "red" rather than of some colour word, which the shuffled-pairs null does not separate
  from attribute-level sharing.

Positive control (`text_split_matching`): the same matching with both sides taken from word
tokens, D_txt of the captions of even examples against D_txt of odd examples. The same word
through the same model and SAE must share its latents with itself, so this checks that the
statistic, the top-m lists and the nulls detect sharing where it is there by construction.

Text-only control (`text_only_control`). Caption tokens follow the image tokens and attend to
them, so a latent can fire on the word "red" because the token sees a red image, not because
the word carries the concept. The same captions are run without the image (a dataset with
`text_only: true`: TEXT_PROMPT, no image tokens; `saeprobe.backbones.mllm`) and encoded by the
same SAE; with a prime for the text-only run:

* per latent: freq_txt', mass_txt' and text_only_retained = mass_txt' / mass_txt;
* text_only:frac_shared_persist = the fraction of shared latents with freq_txt' > tau;
* text_only:mass_retained = sum_j mass_txt'_j / sum_j mass_txt_j over the shared latents;
* D'_txt = D_txt of the text-only codes, T'_c its top-m latents;
  text_only:concept_retained = sum_c |I_c ∩ T_c ∩ T'_c| / sum_c |I_c ∩ T_c|, the fraction of
  the matched (shared) concept latents whose word activation persists without the image
  (NaN when nothing is matched); text_only:concept_overlap (and _within_attribute) = the
  matching of I_c against T'_c with the same nulls. A sharing that holds with the image and not
  without it is carried by the caption tokens' attention to the image, not by the text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saeprobe.activations import ActivationStore
from saeprobe.data.pairs import concept_sets
from saeprobe.io import atomic_save_npy, atomic_write_csv, atomic_write_json
from saeprobe.sae import load_sae
from saeprobe.sae.site import MODALITY_SCALE
from saeprobe.sites import CONTINUATION
from saeprobe.stats import Estimate, null_estimate

log = logging.getLogger(__name__)


@dataclass
class CrossmodalSums:
    """Sufficient statistics accumulated over the evaluation tokens (float64 sums).

    Shapes: W = SAE width, C = concepts, E = examples, V = tracked words.
    """

    concepts: list[str]
    words: list[str]
    n_img: int
    n_txt: int
    sum_img: np.ndarray  # (W,)
    sum_txt: np.ndarray  # (W,)
    fire_img: np.ndarray  # (W,)
    fire_txt: np.ndarray  # (W,)
    concept_img_sum: np.ndarray  # (C, W) over image tokens of examples with the concept
    concept_img_n: np.ndarray  # (C,)
    concept_txt_sum: np.ndarray  # (C, W) over text tokens whose word is the concept
    concept_txt_n: np.ndarray  # (C,)
    half_txt_sum: np.ndarray  # (W,) over text tokens of even examples
    half_txt_n: int
    concept_half_sum: np.ndarray  # (C, W) over text tokens of even examples whose word is c
    concept_half_n: np.ndarray  # (C,)
    example_max: np.ndarray  # (E, W) max code over each example's image tokens (float32)
    word_sum: np.ndarray  # (V, W) per tracked word
    word_n: np.ndarray  # (V,)


def caption_words(
    example: np.ndarray, position: np.ndarray, word: np.ndarray, text: np.ndarray
) -> np.ndarray:
    """(n,) each token's whole word: a text token whose word starts with CONTINUATION (a piece
    continuing the previous token's word, `saeprobe.backbones.mllm.piece_words`) is joined with
    the token before it in the same example, and every piece of the word gets the joined word;
    other tokens keep theirs. example, position, word, text: (n,) per token (text: bool)."""
    out = np.asarray(word).astype(object).copy()
    rows = np.flatnonzero(text)
    if not len(rows):
        return out
    rows = rows[np.lexsort((position[rows], example[rows]))]
    pieces = out[rows].astype(str)
    follows = np.r_[False, (example[rows][1:] == example[rows][:-1])
                    & (position[rows][1:] == position[rows][:-1] + 1)]  # fmt: skip
    joins = np.char.startswith(pieces, CONTINUATION) & follows
    if not joins.any():
        return out
    stripped = np.where(joins, np.char.lstrip(pieces, "#"), pieces)
    group = np.cumsum(~joins)
    joined = pd.Series(stripped).groupby(group).transform(lambda p: "".join(p)).to_numpy()
    out[rows] = joined
    return out


def accumulate(
    chunks: Iterable[tuple[Tensor, np.ndarray]],
    tokens: pd.DataFrame,
    example_concepts: list[set[str]],
    concepts: list[str],
    width: int,
    max_words: int = 256,
) -> CrossmodalSums:
    """Accumulate CrossmodalSums from (codes (b, W), row indices (b,)) chunks.

    tokens: the extraction's token table (example, modality, word, position) indexed by row;
    example_concepts[e]: the concepts of example e's image; concepts: those to match.
    max_words: the most frequent caption words tracked for the figures.
    """
    n_examples = len(example_concepts)
    c_index = {c: i for i, c in enumerate(concepts)}
    has = np.zeros((n_examples, len(concepts)), dtype=bool)
    for e, cs in enumerate(example_concepts):
        for c in cs:
            if c in c_index:
                has[e, c_index[c]] = True
    modality = tokens["modality"].to_numpy()
    example = tokens["example"].to_numpy()
    word = tokens["word"].astype(str).to_numpy()
    text_words = pd.Series(word[modality == "text"]).value_counts()
    words = sorted(text_words.index[:max_words])
    w_index = {w: i for i, w in enumerate(words)}
    position = tokens["position"].to_numpy() if "position" in tokens else np.arange(len(tokens))
    whole = caption_words(example, position, word, modality == "text").astype(str)
    word_concept = np.full(len(tokens), -1)
    for c, i in c_index.items():
        word_concept[(modality == "text") & np.isin(whole, [c, c + "s"])] = i
    word_id = np.array([w_index.get(w, -1) for w in word])
    z = dict(
        sum_img=np.zeros(width),
        sum_txt=np.zeros(width),
        fire_img=np.zeros(width),
        fire_txt=np.zeros(width),
        concept_img_sum=np.zeros((len(concepts), width)),
    )
    example_max = torch.zeros(n_examples, width)
    word_sum = torch.zeros(len(words), width, dtype=torch.float64)
    concept_txt_sum = torch.zeros(len(concepts), width, dtype=torch.float64)
    concept_half_sum = torch.zeros(len(concepts), width, dtype=torch.float64)
    half_txt_sum = torch.zeros(width, dtype=torch.float64)
    even = example % 2 == 0
    for codes, rows in chunks:
        c = codes.detach().double().cpu()
        img = modality[rows] == "image"
        ci, ct = c[torch.from_numpy(img)], c[torch.from_numpy(~img)]
        z["sum_img"] += ci.sum(0).numpy()
        z["sum_txt"] += ct.sum(0).numpy()
        z["fire_img"] += (ci > 0).sum(0).numpy()
        z["fire_txt"] += (ct > 0).sum(0).numpy()
        ex_img = torch.from_numpy(example[rows][img])
        z["concept_img_sum"] += has[ex_img.numpy()].T.astype(np.float64) @ ci.numpy()
        example_max.scatter_reduce_(0, ex_img[:, None].expand(-1, width), ci.float(), reduce="amax")
        wc = torch.from_numpy(word_concept[rows[~img]])
        concept_txt_sum.index_add_(0, wc[wc >= 0], ct[wc >= 0])
        ev = torch.from_numpy(even[rows[~img]])
        half_txt_sum += ct[ev].sum(0)
        concept_half_sum.index_add_(0, wc[(wc >= 0) & ev], ct[(wc >= 0) & ev])
        wi = torch.from_numpy(word_id[rows[~img]])
        word_sum.index_add_(0, wi[wi >= 0], ct[wi >= 0])
    z["concept_txt_sum"] = concept_txt_sum.numpy()
    z["word_sum"] = word_sum.numpy()
    img_all = modality == "image"
    concept_img_n = has[example[img_all]].sum(0).astype(np.float64)
    concept_txt_n = np.array([(word_concept == i).sum() for i in range(len(concepts))], float)
    text_even = (modality == "text") & even
    concept_half_n = np.array(
        [((word_concept == i) & even).sum() for i in range(len(concepts))], float
    )
    word_n = np.array([text_words[w] for w in words], dtype=np.float64)
    return CrossmodalSums(
        concepts=list(concepts),
        words=words,
        n_img=int(img_all.sum()),
        n_txt=int((modality == "text").sum()),
        concept_img_n=concept_img_n,
        concept_txt_n=concept_txt_n,
        half_txt_sum=half_txt_sum.numpy(),
        half_txt_n=int(text_even.sum()),
        concept_half_sum=concept_half_sum.numpy(),
        concept_half_n=concept_half_n,
        example_max=example_max.numpy(),
        word_n=word_n,
        **z,
    )


def latent_table(s: CrossmodalSums, fire_threshold: float = 1e-3) -> pd.DataFrame:
    """Per latent: freq_img, freq_txt, mass_img, mass_txt, modality_score, alive, shared."""
    freq_img = s.fire_img / max(s.n_img, 1)
    freq_txt = s.fire_txt / max(s.n_txt, 1)
    mass_img = s.sum_img / max(s.n_img, 1)
    mass_txt = s.sum_txt / max(s.n_txt, 1)
    total = mass_img + mass_txt
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(total > 0, (mass_img - mass_txt) / total, np.nan)
    alive = (s.fire_img + s.fire_txt) > 0
    return pd.DataFrame(
        {
            "latent": np.arange(len(freq_img)),
            "freq_img": freq_img,
            "freq_txt": freq_txt,
            "mass_img": mass_img,
            "mass_txt": mass_txt,
            "modality_score": score,
            "alive": alive,
            "shared": (freq_img > fire_threshold) & (freq_txt > fire_threshold),
        }
    )


def summary_rows(latents: pd.DataFrame, fire_threshold: float) -> list[dict[str, float]]:
    """Latent-level summary metrics (see the module docstring) as {metric, value} rows."""
    alive = latents[latents["alive"]]
    n_alive = max(len(alive), 1)
    img_on = alive["freq_img"] > fire_threshold
    txt_on = alive["freq_txt"] > fire_threshold
    return [
        {"metric": "frac_alive", "value": len(alive) / max(len(latents), 1)},
        {"metric": "frac_shared", "value": float((img_on & txt_on).sum()) / n_alive},
        {"metric": "frac_image_only", "value": float((img_on & ~txt_on).sum()) / n_alive},
        {"metric": "frac_text_only", "value": float((~img_on & txt_on).sum()) / n_alive},
        {"metric": "mean_abs_modality_score", "value": float(alive["modality_score"].abs().mean())},
    ]


def word_contrast(
    concept_sum: np.ndarray,
    concept_n: np.ndarray,
    total_sum: np.ndarray,
    total_n: float,
    attributes: Sequence[str],
) -> np.ndarray:
    """(C, W): mean code of concept c's word tokens minus that of the words of c's other
    concepts of the same attribute (all other text tokens when c's attribute has no other).

    concept_sum (C, W) / concept_n (C,): per concept word; total_sum (W,) / total_n: all text
    tokens; attributes[c]: c's attribute."""
    attr = np.asarray(attributes)
    same = (attr[:, None] == attr[None, :]) & ~np.eye(len(attr), dtype=bool)
    other_sum = same.astype(float) @ concept_sum
    other_n = same.astype(float) @ concept_n
    lone = other_n == 0
    other_sum[lone] = total_sum[None] - concept_sum[lone]
    other_n[lone] = total_n - concept_n[lone]
    with np.errstate(invalid="ignore", divide="ignore"):
        return concept_sum / concept_n[:, None] - other_sum / other_n[:, None]


def concept_differences(
    s: CrossmodalSums, attributes: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """(D_img, D_txt), each (C, W): mean code with the concept minus without (docstring)."""
    attr = [attributes.get(c, "") for c in s.concepts]
    with np.errstate(invalid="ignore", divide="ignore"):
        img_in = s.concept_img_sum / s.concept_img_n[:, None]
        img_out = (s.sum_img[None] - s.concept_img_sum) / (s.n_img - s.concept_img_n)[:, None]
    d_txt = word_contrast(s.concept_txt_sum, s.concept_txt_n, s.sum_txt, s.n_txt, attr)
    return img_in - img_out, d_txt


def text_split_differences(
    s: CrossmodalSums, attributes: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """(D_even, D_odd), each (C, W): D_txt on the captions of even and of odd examples."""
    attr = [attributes.get(c, "") for c in s.concepts]
    even = word_contrast(s.concept_half_sum, s.concept_half_n, s.half_txt_sum, s.half_txt_n, attr)
    odd = word_contrast(
        s.concept_txt_sum - s.concept_half_sum,
        s.concept_txt_n - s.concept_half_n,
        s.sum_txt - s.half_txt_sum,
        s.n_txt - s.half_txt_n,
        attr,
    )
    return even, odd


def top_m(d: np.ndarray, m: int) -> np.ndarray:
    """(C, m) indices of the m largest entries per row (ties broken by index)."""
    return np.argsort(-d, axis=1, kind="stable")[:, :m]


def overlap_matrix(img_top: np.ndarray, txt_top: np.ndarray) -> np.ndarray:
    """O[c, c'] = |img_top[c] ∩ txt_top[c']| / m, (C, C)."""
    m = img_top.shape[1]
    return np.array([[len(set(a) & set(b)) / m for b in txt_top] for a in img_top])


def derangements(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, n) random permutations without fixed points (n >= 2)."""
    out = np.empty((count, n), dtype=np.int64)
    i = 0
    while i < count:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            out[i] = p
            i += 1
    return out


def group_derangements(groups: Sequence[str], count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, n) random permutations that move every element to another element of its own
    group (a derangement within each group); elements alone in their group stay in place."""
    groups = np.asarray(groups)
    out = np.tile(np.arange(len(groups)), (count, 1))
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) >= 2:
            out[:, members] = members[derangements(len(members), count, rng)]
    return out


WITHIN = "_within_attribute"


def match_concepts(
    d_a: np.ndarray,
    d_b: np.ndarray,
    names: Sequence[str],
    attributes: Mapping[str, str],
    m: int = 5,
    n_null: int = 1000,
    seed: int = 0,
    prefix: str = "",
) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """Match the top-m latents of side a (C, W) to those of side b (C, W) per concept `names`.

    Returns (per-concept frame, summary rows {metric, value, null_value, null_lo, null_hi,
    p_value}) for `concept_overlap` and `concept_top1_shared` against the shuffled-pairs null,
    `concept_overlap_within_attribute` against the within-attribute null (concepts of
    attributes with at least two concepts; absent when there are none) and the per-attribute
    means; metric names start with `prefix`."""
    n = len(names)
    a_top, b_top = top_m(d_a, m), top_m(d_b, m)
    o = overlap_matrix(a_top, b_top)
    t1 = (a_top[:, :1] == b_top[:, 0][None, :]).astype(float)
    off = ~np.eye(n, dtype=bool)
    attr = [attributes.get(c, "") for c in names]
    rows = []
    for i, c in enumerate(names):
        null = o[i][off[i]]
        rows.append(
            {
                "concept": c,
                "attribute": attr[i],
                "overlap": o[i, i],
                "null_value": null.mean(),
                "null_lo": np.percentile(null, 2.5),
                "null_hi": np.percentile(null, 97.5),
                "top1_shared": t1[i, i],
                "top1_null": t1[i][off[i]].mean(),
                "img_latent": int(a_top[i, 0]),
                "txt_latent": int(b_top[i, 0]),
            }
        )
    frame = pd.DataFrame(rows)
    rng = np.random.default_rng(seed)
    ar = np.arange(n)
    perms = derangements(n, n_null, rng)
    tests = [("concept_overlap", o, perms, ar), ("concept_top1_shared", t1, perms, ar)]
    counts = pd.Series(attr).value_counts()
    paired = np.flatnonzero([counts[a] >= 2 for a in attr])
    if len(paired):
        tests.append(("concept_overlap" + WITHIN, o, group_derangements(attr, n_null, rng), paired))
    summary: list[dict[str, object]] = []
    for metric, mat, perms, keep in tests:
        obs = float(np.diag(mat)[keep].mean())
        null = mat[ar[None, :], perms][:, keep].mean(1)
        e = null_estimate(obs, null)
        summary.append(
            {
                "metric": prefix + metric,
                "value": obs,
                "null_value": float(null.mean()),
                "null_lo": e.ci_low,
                "null_hi": e.ci_high,
                "p_value": e.p,
            }
        )
    for attribute, part in frame.groupby("attribute"):
        summary.append(
            {
                "metric": f"{prefix}concept_overlap[{attribute}]",
                "value": float(part["overlap"].mean()),
                "null_value": float(part["null_value"].mean()),
            }
        )
    return frame, summary


CONCEPT_COLUMNS = (
    "concept",
    "attribute",
    "overlap",
    "null_value",
    "null_lo",
    "null_hi",
    "top1_shared",
    "top1_null",
    "img_latent",
    "txt_latent",
    "n_img_tokens",
    "n_txt_tokens",
)


def concept_matching(
    s: CrossmodalSums,
    attributes: dict[str, str],
    m: int = 5,
    n_null: int = 1000,
    min_count: int = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """Per-concept matching rows and summary rows of image against word latents (see the
    module docstring and `match_concepts`).

    Concepts with fewer than `min_count` image examples with or without them, or fewer than
    `min_count` matching word tokens, are left out. Returns (per-concept frame with columns
    CONCEPT_COLUMNS, no rows when fewer than two concepts are left; summary rows).
    """
    d_img, d_txt = concept_differences(s, attributes)
    ok = (
        (s.concept_img_n >= min_count)
        & (s.n_img - s.concept_img_n >= min_count)
        & (s.concept_txt_n >= min_count)
    )
    idx = np.flatnonzero(ok)
    if len(idx) < 2:
        return pd.DataFrame(columns=list(CONCEPT_COLUMNS)), []
    names = [s.concepts[i] for i in idx]
    frame, summary = match_concepts(d_img[idx], d_txt[idx], names, attributes, m, n_null, seed)
    frame["n_img_tokens"] = s.concept_img_n[idx].astype(int)
    frame["n_txt_tokens"] = s.concept_txt_n[idx].astype(int)
    return frame, summary


TEXT_SPLIT = "text_split:"


def text_split_matching(
    s: CrossmodalSums,
    attributes: dict[str, str],
    m: int = 5,
    n_null: int = 1000,
    min_count: int = 5,
    seed: int = 0,
) -> list[dict[str, object]]:
    """The positive control: summary rows (metrics prefixed `text_split:`) of matching the word
    latents of even examples' captions to those of odd examples' (`text_split_differences`);
    concepts with fewer than `min_count` word tokens in either half are left out."""
    d_even, d_odd = text_split_differences(s, attributes)
    ok = (s.concept_half_n >= min_count) & (s.concept_txt_n - s.concept_half_n >= min_count)
    idx = np.flatnonzero(ok)
    if len(idx) < 2:
        return []
    names = [s.concepts[i] for i in idx]
    _, summary = match_concepts(
        d_even[idx], d_odd[idx], names, attributes, m, n_null, seed, prefix=TEXT_SPLIT
    )
    return summary


TEXT_ONLY = "text_only:"


def text_only_control(
    s: CrossmodalSums,
    s_text: CrossmodalSums,
    latents: pd.DataFrame,
    attributes: Mapping[str, str],
    concepts: Sequence[str],
    m: int = 5,
    n_null: int = 1000,
    fire_threshold: float = 1e-3,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, object]]]:
    """The text-only control (module docstring) of sums `s` (captions with their images) and
    `s_text` (the same captions without, same SAE and concepts).

    latents: `latent_table(s)`; concepts: the matched concepts (`concept_matching`'s rows).
    Returns (latents with freq_txt_text_only, mass_txt_text_only, text_only_retained; per
    concept: concept, overlap_text_only, retained (NaN where nothing is matched); summary rows
    with metrics prefixed `text_only:`)."""
    if s_text.concepts != s.concepts:
        raise ValueError("the text-only sums must track the same concepts as the measured ones")
    n_txt = max(s_text.n_txt, 1)
    freq_t, mass_t = s_text.fire_txt / n_txt, s_text.sum_txt / n_txt
    with np.errstate(invalid="ignore", divide="ignore"):
        retained = np.where(latents["mass_txt"] > 0, mass_t / latents["mass_txt"], np.nan)
    latents = latents.assign(
        freq_txt_text_only=freq_t, mass_txt_text_only=mass_t, text_only_retained=retained
    )
    shared = latents["shared"].to_numpy(bool)
    mass_shared = float(latents["mass_txt"].to_numpy()[shared].sum())
    rows: list[dict[str, object]] = [
        {
            "metric": TEXT_ONLY + "frac_shared_persist",
            "value": float((freq_t[shared] > fire_threshold).mean()) if shared.any() else np.nan,
        },
        {
            "metric": TEXT_ONLY + "mass_retained",
            "value": float(mass_t[shared].sum()) / mass_shared if mass_shared > 0 else np.nan,
        },
    ]
    if len(concepts) < 2:
        return latents, pd.DataFrame(columns=["concept", "overlap_text_only", "retained"]), rows
    idx = [s.concepts.index(c) for c in concepts]
    d_img, d_txt = concept_differences(s, dict(attributes))
    _, d_txt_alone = concept_differences(s_text, dict(attributes))
    i_top, t_top, t_alone = (top_m(d[idx], m) for d in (d_img, d_txt, d_txt_alone))
    matched = [set(a) & set(b) for a, b in zip(i_top, t_top, strict=True)]
    kept = [len(mc & set(c)) for mc, c in zip(matched, t_alone, strict=True)]
    per_concept = pd.DataFrame(
        {
            "concept": list(concepts),
            "overlap_text_only": np.diag(overlap_matrix(i_top, t_alone)),
            "retained": [
                k / len(mc) if mc else np.nan for k, mc in zip(kept, matched, strict=True)
            ],
        }
    )
    n_matched = sum(len(mc) for mc in matched)
    rows.append(
        {
            "metric": TEXT_ONLY + "concept_retained",
            "value": sum(kept) / n_matched if n_matched else np.nan,
        }
    )
    _, summary = match_concepts(
        d_img[idx], d_txt_alone[idx], list(concepts), attributes, m, n_null, seed, TEXT_ONLY
    )
    rows += [r for r in summary if "[" not in str(r["metric"])]
    return latents, per_concept, rows


def shared_examples(
    s: CrossmodalSums, latents: list[int], n_images: int = 6, n_words: int = 6
) -> list[dict[str, object]]:
    """Per latent: the examples with the largest image-token code and the words with the largest
    mean code (words seen at least 3 times)."""
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        word_mean = s.word_sum / s.word_n[:, None]
    word_mean[s.word_n < 3] = -np.inf
    for j in latents:
        ex = np.argsort(-s.example_max[:, j], kind="stable")[:n_images]
        wd = np.argsort(-word_mean[:, j], kind="stable")[:n_words] if len(s.words) else []
        out.append(
            {
                "latent": int(j),
                "examples": [int(e) for e in ex],
                "example_codes": [float(s.example_max[e, j]) for e in ex],
                "words": [s.words[w] for w in wd],
                "word_codes": [float(word_mean[w, j]) for w in wd],
            }
        )
    return out


def _code_chunks(
    sae: Any, x: np.ndarray, chunk: int = 4096
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    for i in range(0, len(x), chunk):
        rows = np.arange(i, min(i + chunk, len(x)))
        with torch.no_grad():
            codes = sae.encode(torch.from_numpy(np.ascontiguousarray(x[rows])))
        yield codes, rows


def _text_only_sums(
    sae: Any,
    scales: Mapping[str, float],
    site_dir: str | Path,
    examples: pd.DataFrame,
    concepts: list[str],
) -> CrossmodalSums:
    """CrossmodalSums of a text-only store site (`text_only: true`) of the same captions as
    `examples` (the measured store's example table, indexed by example)."""
    store = ActivationStore(site_dir)
    if not store.dataset_info().get("text_only", False):
        raise ValueError(
            f"{site_dir}: expected a text-only extraction (a dataset with text_only: true)"
        )
    alone = store.examples().set_index("index", drop=False)
    same = len(alone) == len(examples) and alone.index.equals(examples.index)
    if not same or not (alone["caption"].astype(str) == examples["caption"].astype(str)).all():
        raise ValueError(
            f"{site_dir}: the text-only store's captions differ from the measured store's; "
            "expected the evaluation dataset's examples with text_only: true"
        )
    x = store.read_all() / store.row_divisors(dict(scales))[:, None]
    sums = accumulate(
        _code_chunks(sae, x), store.rows(), concept_sets(alone), concepts, sae.cfg.width
    )
    if sums.n_img:
        raise ValueError(f"{site_dir}: a text-only store holds {sums.n_img} image tokens")
    return sums


def evaluate_crossmodal(
    sae_dir: str | Path,
    site_dir: str | Path,
    out: Mapping[str, str | Path],
    top_m: int = 5,
    n_null: int = 1000,
    min_count: int = 5,
    fire_threshold: float = 1e-3,
    n_shared_examples: int = 4,
    seed: int = 0,
    text_only_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Cross-modal statistics of one SAE on an evaluation store site of image + caption tokens;
    writes `out`: latents (per latent), concepts (per concept), summary (metric, value,
    null_value, null_lo, null_hi, p_value, concept), shared (JSON: examples of shared latents:
    top images and words) and thumbnails (.npy: the images `shared` refers to).
    text_only_dir: the same site of the same captions extracted without their images (a
    `text_only` dataset); adds the text-only control (`text_only_control`) to every output.
    Returns the summary + per-concept rows (metric, value, null_value, concept, ...)."""
    sae_dir = Path(sae_dir)
    sae = load_sae(sae_dir)
    scales = json.loads((sae_dir / MODALITY_SCALE).read_text())
    store = ActivationStore(site_dir)
    tokens, examples = store.rows(), store.examples().set_index("index", drop=False)
    x = store.read_all() / store.row_divisors(scales)[:, None]
    attributes: dict[str, str] = store.dataset_info()["attributes"]
    concepts = sorted(attributes)
    sums = accumulate(_code_chunks(sae, x), tokens, concept_sets(examples), concepts, sae.cfg.width)
    latents = latent_table(sums, fire_threshold)
    rows: list[dict[str, Any]] = [
        {**r, "concept": ""} for r in summary_rows(latents, fire_threshold)
    ]
    per_concept, summary = concept_matching(sums, attributes, top_m, n_null, min_count, seed)
    rows += [{**r, "concept": ""} for r in summary]
    positive = text_split_matching(sums, attributes, top_m, n_null, min_count, seed)
    rows += [{**r, "concept": ""} for r in positive]
    if text_only_dir is not None:
        text_sums = _text_only_sums(sae, scales, text_only_dir, examples, concepts)
        latents, alone, control = text_only_control(
            sums,
            text_sums,
            latents,
            attributes,
            list(per_concept["concept"]),
            top_m,
            n_null,
            fire_threshold,
            seed,
        )
        per_concept = per_concept.merge(alone, on="concept", how="left")
        rows += [{**r, "concept": ""} for r in control]
    for r in per_concept.to_dict("records"):
        rows.append(
            {
                "metric": "concept_overlap",
                "value": r["overlap"],
                "null_value": r["null_value"],
                "null_lo": r["null_lo"],
                "null_hi": r["null_hi"],
                "concept": r["concept"],
                "attribute": r["attribute"],
            }
        )
        rows.append(
            {
                "metric": "concept_top1_shared",
                "value": r["top1_shared"],
                "null_value": r["top1_null"],
                "concept": r["concept"],
                "attribute": r["attribute"],
            }
        )
    table = pd.DataFrame(rows)
    # examples of shared latents: the top image latents of matched concepts that also fire on text
    shared = latents.set_index("latent")["shared"]
    picks: list[int] = []
    if len(per_concept):
        ranked = per_concept.sort_values(["overlap", "concept"], ascending=[False, True])
        for latent in ranked["img_latent"]:
            if shared.get(latent, False) and latent not in picks:
                picks.append(int(latent))
    if len(picks) < n_shared_examples:
        score = latents[latents["shared"]].assign(
            m=lambda f: np.minimum(f["mass_img"], f["mass_txt"])
        )
        for latent in score.sort_values("m", ascending=False)["latent"]:
            if latent not in picks:
                picks.append(int(latent))
    picks = picks[:n_shared_examples]
    shared_info = shared_examples(sums, picks)
    thumbs = store.thumbnails()
    used = sorted({e for s in shared_info for e in s["examples"]})
    for s in shared_info:
        s["thumb_rows"] = [used.index(e) for e in s["examples"]]
        s["captions"] = [str(examples.loc[e, "caption"]) for e in s["examples"]]
        concept_of = per_concept[per_concept["img_latent"] == s["latent"]]["concept"]
        s["concepts"] = list(concept_of)
    atomic_save_npy(out["thumbnails"], np.asarray(thumbs[used]))
    atomic_write_json(out["shared"], shared_info)
    atomic_write_csv(out["latents"], latents)
    atomic_write_csv(out["concepts"], per_concept)
    atomic_write_csv(out["summary"], table)
    log.info("%s: %s", store.site, table[table["concept"] == ""].to_string())
    return table


JUDGED = ("concept_overlap", "concept_overlap" + WITHIN)


def _estimates(summary: pd.DataFrame, prefix: str = "") -> dict[str, Estimate]:
    """The judged statistics of one summary table: value, the null's 95% band as the interval
    and the permutation p-value (missing statistics are left out)."""
    rows = summary[summary["concept"].fillna("") == ""].set_index("metric")
    out = {}
    for name in JUDGED:
        if prefix + name in rows.index:
            r = rows.loc[prefix + name]
            out[name] = Estimate(
                float(r["value"]), float(r["null_lo"]), float(r["null_hi"]), float(r["p_value"])
            )
    return out


TEXT_ONLY_CASE = "reported:text_only"
TEXT_ONLY_REPORTED = ("concept_retained", "mass_retained", "frac_shared_persist")


def _text_only_estimates(summary: pd.DataFrame) -> dict[str, Estimate]:
    """The text-only control's statistics of one summary table (empty without the control):
    the judged statistics recomputed on the captions alone and the retained fractions."""
    out = _estimates(summary, TEXT_ONLY)
    rows = summary[summary["concept"].fillna("") == ""].set_index("metric")["value"]
    for name in TEXT_ONLY_REPORTED:
        if TEXT_ONLY + name in rows.index:
            out[name] = Estimate(float(rows[TEXT_ONLY + name]))
    return out


def crossmodal_evidence(
    sites: Sequence[str],
    summaries: Sequence[pd.DataFrame],
    measured: Sequence[str],
    primary: Mapping[str, str],
    negatives: Mapping[str, str],
) -> list[dict]:
    """Evidence rows of the crossmodal claim, one site per (measured model, layer site).

    sites: "{model}/{site}/{sae name}" per summary table (`evaluate_crossmodal`); measured: the
    models the claim is judged on; primary: {model: its pre-registered SAE}, negative models
    included; negatives: {measured model: the same model trained on shuffled captions} (a model
    without one has no negative case).
    measured: image vs word latents of the primary SAE; positive: the text-split matching of
    the same SAE (`text_split_matching`); negative: the primary SAE of the negative model at
    the same site; sensitivity:<sae>: the measured model's other SAEs; reported:text_only (not
    judged): the primary SAE's text-only control (`text_only_control`) where it was run."""
    from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows

    table = {tuple(s.split("/")): f for s, f in zip(sites, summaries, strict=True)}
    rows: list[dict] = []
    for (model, site, name), summary in table.items():
        if model not in measured:
            continue
        where = f"{model}/{site}"
        if name != primary[model]:
            rows += evidence_rows("crossmodal", where, SENSITIVITY + name, _estimates(summary))
            continue
        rows += evidence_rows("crossmodal", where, MEASURED, _estimates(summary), name)
        rows += evidence_rows(
            "crossmodal", where, POSITIVE, _estimates(summary, TEXT_SPLIT), "text split"
        )
        alone = _text_only_estimates(summary)
        if alone:
            rows += evidence_rows(
                "crossmodal", where, TEXT_ONLY_CASE, alone, "captions without their image"
            )
        control = negatives.get(model)
        key = (control, site, primary.get(control, ""))
        if control is not None and key in table:
            rows += evidence_rows(
                "crossmodal", where, NEGATIVE, _estimates(table[key]), f"{control}/{key[2]}"
            )
    return rows
