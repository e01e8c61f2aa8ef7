"""Steering generation with SAE latents on the text encoder, and automated attribute discovery.

Strength unit: a latent's typical value (its mean code where active on the prompt corpus), so
strength 1 adds the latent once at the size it usually has. Add mode adds
`strength * typical * W_dec[latent] / input_scale` to the residual stream at the chosen tokens;
clamp mode sets the latent's code to `strength * typical` there (the SAE error is kept).
Branch "cond" steers the prompt only; "both" also the unconditional ("") prompt of
classifier-free guidance. Unsteered images (same prompts and seeds, no hook) are the baseline of
effect and preservation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.diffusion.hooks import Tokens, latent_direction, steer, token_mask
from saeprobe.diffusion.metrics import (
    Scorer,
    clip_scores,
    colour_fractions,
    group_probabilities,
    pixel_mse,
    preservation,
)
from saeprobe.diffusion.pipeline import encode, generate, tokenize_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenSettings:
    """How images are generated: sampler steps, CFG scale, hook layer/tokens/branch/mode.

    The sampler fields are the `diffusion.generation` config section; layer, tokens, branch and
    mode come from the task (`diffusion.steering` or `diffusion.attributes`), see
    `saeprobe.diffusion.experiment.gen_settings`.
    """

    layer: int
    tokens: Tokens = "all"
    branch: str = "cond"
    mode: str = "add"
    steps: int = 15
    guidance_scale: float = 4.0
    batch_size: int = 64
    height: int | None = None


@torch.no_grad()
def latent_stats(sae: Any, acts: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per latent: (mass = sum of codes, typical = mean code where active), both (width,)."""
    width = sae.width
    mass = torch.zeros(width, dtype=torch.float64)
    count = torch.zeros(width, dtype=torch.float64)
    for i in range(0, len(acts), chunk):
        codes = sae.encode(torch.from_numpy(np.asarray(acts[i : i + chunk])).float()).double()
        mass += codes.sum(0)
        count += (codes > 0).sum(0)
    typical = (mass / count.clamp_min(1)).numpy()
    return mass.numpy(), typical


@torch.no_grad()
def prompt_codes(sae: Any, acts: np.ndarray, prompt: np.ndarray, n_prompts: int) -> np.ndarray:
    """Max code over each prompt's tokens: (n_prompts, width). prompt: (rows,) prompt index."""
    out = torch.zeros(n_prompts, sae.width)
    idx = torch.from_numpy(np.array(prompt, dtype=np.int64))
    for i in range(0, len(acts), 8192):
        codes = sae.encode(torch.from_numpy(np.asarray(acts[i : i + 8192])).float())
        j = idx[i : i + 8192, None].expand_as(codes)
        out.scatter_reduce_(0, j, codes, reduce="amax")
    return out.numpy()


def word_contrast(codes: np.ndarray, prompts: Sequence[str], words: Sequence[str]) -> np.ndarray:
    """(len(words), width): mean max-code on prompts containing the word minus on the others.

    codes: (n_prompts, width) from `prompt_codes`. A word counts when it is a whole word.
    """
    tokens = [set(p.lower().split()) for p in prompts]
    out = np.zeros((len(words), codes.shape[1]), np.float32)
    for i, w in enumerate(words):
        has = np.array([w.lower() in t for t in tokens])
        if has.all() or not has.any():
            continue
        out[i] = codes[has].mean(0) - codes[~has].mean(0)
    return out


def pick_latents(contrast: np.ndarray, words: Sequence[str]) -> dict[str, int]:
    """The latent with the largest contrast for each word."""
    return {w: int(contrast[i].argmax()) for i, w in enumerate(words)}


def _embeds(
    pipe: Any,
    prompts: Sequence[str],
    gen: GenSettings,
    sae: Any | None = None,
    latent: int | None = None,
    value: float = 0.0,
    delta: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond (n, ctx, d), uncond (n, ctx, d)) embeddings, steered as `gen` says when `sae`;
    `delta` (d,): add this raw direction instead (any mode; the controls' directions)."""
    ids, am = tokenize_prompts(pipe, prompts)
    nids, nam = tokenize_prompts(pipe, [""] * len(prompts))
    if sae is None and delta is None:
        return encode(pipe, ids), encode(pipe, nids)

    def steered(i: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        mask = token_mask(a, gen.tokens)
        if delta is not None or gen.mode == "add":
            d = delta if delta is not None else value * latent_direction(sae, latent)
            with steer(pipe.text_encoder, gen.layer, mask, delta=d):
                return encode(pipe, i)
        with steer(pipe.text_encoder, gen.layer, mask, clamp=(sae, latent, value)):
            return encode(pipe, i)

    cond = steered(ids, am)
    uncond = steered(nids, nam) if gen.branch == "both" else encode(pipe, nids)
    return cond, uncond


def _grid(prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    p = [q for q in prompts for _ in seeds]
    s = [int(x) for _ in prompts for x in seeds]
    return p, s


def run_steering(
    pipe: Any,
    sae: Any,
    sae_name: str,
    concepts: Mapping[str, Mapping[str, Any]],
    prompts: Sequence[str],
    seeds: Sequence[int],
    strengths: Sequence[float],
    gen: GenSettings,
    scorer: Scorer,
    colours: Mapping[str, Sequence[int]] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Generate every (concept, strength, prompt, seed) and measure the effect.

    concepts: {name: {"latent": int, "typical": float, "text": str}}. Returns the table (one row
    per image) and images: {"base": (P*S, H, W, 3), concept: (K, P*S, H, W, 3)} with rows in
    (prompt, seed) order and K = len(strengths).
    """
    ps, ss = _grid(prompts, seeds)
    cond0, unc0 = _embeds(pipe, ps, gen)
    base = generate(
        pipe, cond0, unc0, ss, gen.steps, gen.guidance_scale, gen.batch_size, gen.height
    )
    base_emb = scorer.images(base)
    names = list(concepts)
    text_emb = scorer.texts([concepts[c]["text"] for c in names])
    base_clip = clip_scores(base_emb, text_emb)
    base_col = colour_fractions(base, colours) if colours else {}
    conds, uncs, keys = [], [], []
    for c in names:
        for k, s in enumerate(strengths):
            value = float(s) * float(concepts[c]["typical"])
            if gen.mode == "add" and s == 0:
                continue
            cond, unc = _embeds(pipe, ps, gen, sae, int(concepts[c]["latent"]), value)
            conds.append(cond)
            uncs.append(unc)
            keys.append((c, k))
    imgs = np.zeros((len(names), len(strengths), *base.shape), np.uint8)
    if keys:
        flat = generate(
            pipe,
            torch.cat(conds),
            torch.cat(uncs),
            ss * len(keys),
            gen.steps,
            gen.guidance_scale,
            gen.batch_size,
            gen.height,
        ).reshape(len(keys), *base.shape)
        for (c, k), block in zip(keys, flat, strict=True):
            imgs[names.index(c), k] = block
    rows = []
    for ci, c in enumerate(names):
        for k, s in enumerate(strengths):
            if gen.mode == "add" and s == 0:
                imgs[ci, k] = base
            emb = scorer.images(imgs[ci, k])
            score = clip_scores(emb, text_emb[ci : ci + 1])[:, 0]
            pres = preservation(emb, base_emb)
            mse = pixel_mse(imgs[ci, k], base)
            col = colour_fractions(imgs[ci, k], colours) if colours and c in colours else None
            for j, (p, seed) in enumerate(zip(ps, ss, strict=True)):
                row = {
                    "sae": sae_name,
                    "latent": int(concepts[c]["latent"]),
                    "concept": c,
                    "strength": float(s),
                    "seed": seed,
                    "prompt": p,
                    "effect": float(score[j] - base_clip[j, ci]),
                    "preservation": float(pres[j]),
                    "clip_score": float(score[j]),
                    "clip_score_base": float(base_clip[j, ci]),
                    "pixel_mse": float(mse[j]),
                    "colour_fraction": float(col[c][j]) if col else np.nan,
                    "colour_effect": float(col[c][j] - base_col[c][j]) if col else np.nan,
                    "code_value": float(s) * float(concepts[c]["typical"]),
                    "mode": gen.mode,
                    "branch": gen.branch,
                }
                rows.append(row)
    images = {"base": base, **{c: imgs[i] for i, c in enumerate(names)}}
    return pd.DataFrame(rows), images


def discover_attributes(
    pipe: Any,
    sae: Any,
    sae_name: str,
    latents: Sequence[int],
    typical: np.ndarray,
    prompts: Sequence[str],
    seeds: Sequence[int],
    strength: float,
    gen: GenSettings,
    scorer: Scorer,
    vocabulary: Mapping[str, str],
    min_consistency: float,
    min_effect: float,
    groups: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Name latents by the attribute their steering adds, consistently across prompts and seeds.

    For each latent: images with it (steered at `strength`) and without (unsteered) for every
    (prompt, seed); the judge reads each image as zero-shot probabilities of the attributes in
    `vocabulary` ({attribute: text}) within their `groups` ({attribute: group}; None: one
    group) (`AttributeJudge`); a pair's best attribute is the one whose probability rises
    most; the latent's attribute is the modal best one, consistency the fraction of pairs that
    agree with it, effect the mean probability change of that attribute. Latents with
    consistency >= min_consistency and effect >= min_effect are kept and ranked by
    effect * consistency (rank 1 = strongest). Returns the table and images {"base",
    "latent_<i>"}.
    """
    ps, ss = _grid(prompts, seeds)
    cond0, unc0 = _embeds(pipe, ps, gen)
    base = generate(
        pipe, cond0, unc0, ss, gen.steps, gen.guidance_scale, gen.batch_size, gen.height
    )
    base_emb = scorer.images(base)
    judge = AttributeJudge(scorer, vocabulary, groups)
    conds, uncs = [], []
    for latent in latents:
        cond, unc = _embeds(
            pipe, ps, gen, sae, int(latent), float(strength) * float(typical[latent])
        )
        conds.append(cond)
        uncs.append(unc)
    flat = generate(
        pipe,
        torch.cat(conds),
        torch.cat(uncs),
        ss * len(latents),
        gen.steps,
        gen.guidance_scale,
        gen.batch_size,
        gen.height,
    ).reshape(len(latents), *base.shape)
    images = {"base": base}
    rows = []
    for latent, with_img in zip(latents, flat, strict=True):
        row = judge.row(scorer.images(with_img), base_emb)
        value = float(strength) * float(typical[latent])
        rows.append(
            {"sae": sae_name, "latent": int(latent), **row, "strength": float(strength)}
            | {"code_value": value}
        )
        images[f"latent_{int(latent)}"] = with_img
    return keep_and_rank(pd.DataFrame(rows), min_consistency, min_effect), images


class AttributeJudge:
    """Names what a steering did to images: the scorer's zero-shot probabilities of the
    vocabulary's attributes ({attribute: text}), a softmax within each group ({attribute:
    group}; None: the whole vocabulary is one group). On real world renderings that differ in
    one attribute, the probability that rises most names it 100% (colour), 90-98% (shape) and
    95-96% (background) of the time; the raw CLIP-score change that rises most, 66%, 51-63% and
    73-79% (BENCHMARKS.md, world diffusion round 6; benchmarks/attribute_judge.py)."""

    def __init__(
        self, scorer: Scorer, vocabulary: Mapping[str, str], groups: Mapping[str, str] | None
    ):
        self.scorer = scorer
        self.attrs = list(vocabulary)
        self.groups = [groups[a] for a in self.attrs] if groups else [""] * len(self.attrs)
        self.text_emb = scorer.texts([vocabulary[a] for a in self.attrs])

    def probabilities(self, emb: torch.Tensor) -> torch.Tensor:
        """Image embeddings (n, e) -> probabilities (n, A), each group summing to 1."""
        scores = clip_scores(emb, self.text_emb)
        return group_probabilities(scores, self.groups, self.scorer.logit_scale)

    def change(self, emb: torch.Tensor, base_emb: torch.Tensor) -> torch.Tensor:
        """Probability change (pairs, A) from base_emb to emb (pairs, e): image embeddings of
        the same (prompt, seed) pairs; its argmax is the attribute a pair gains."""
        return self.probabilities(emb) - self.probabilities(base_emb)

    def row(self, emb: torch.Tensor, base_emb: torch.Tensor) -> dict[str, Any]:
        """Name one steering by the attribute its images gain. emb, base_emb: (pairs, e)
        embeddings of the steered and unsteered images of the same (prompt, seed) pairs."""
        delta = self.change(emb, base_emb)
        best = delta.argmax(1).numpy()
        counts = np.bincount(best, minlength=len(self.attrs))
        modal = int(counts.argmax())
        second = next(int(a) for a in np.argsort(-delta.mean(0).numpy()) if a != modal)
        return {
            "attribute": self.attrs[modal],
            "effect": float(delta[:, modal].mean()),
            "consistency": float(counts[modal] / len(best)),
            "runner_up": self.attrs[second],
            "preservation": float(preservation(emb, base_emb).mean()),
        }


def keep_and_rank(table: pd.DataFrame, min_consistency: float, min_effect: float) -> pd.DataFrame:
    """Add kept (consistency and effect thresholds), score = effect x consistency, rank."""
    table = table.copy()
    table["kept"] = (table["consistency"] >= min_consistency) & (table["effect"] >= min_effect)
    table["score"] = table["effect"] * table["consistency"]
    order = table[table["kept"]].sort_values("score", ascending=False).index
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table.loc[order, "rank"] = np.arange(1, len(order) + 1)
    return table


def _generate_directions(
    pipe: Any,
    ps: Sequence[str],
    ss: Sequence[int],
    deltas: Sequence[torch.Tensor],
    gen: GenSettings,
    shape: tuple[int, ...],
) -> np.ndarray:
    """Images (len(deltas), len(ps), H, W, 3), one block per raw direction (d,) added."""
    if not deltas:
        return np.zeros((0, *shape), np.uint8)
    conds, uncs = zip(*(_embeds(pipe, ps, gen, delta=d) for d in deltas), strict=True)
    return generate(
        pipe,
        torch.cat(conds),
        torch.cat(uncs),
        list(ss) * len(deltas),
        gen.steps,
        gen.guidance_scale,
        gen.batch_size,
        gen.height,
    ).reshape(len(deltas), *shape)


def discover_directions(
    pipe: Any,
    names: Sequence[str],
    deltas: Sequence[torch.Tensor],
    base: np.ndarray,
    prompts: Sequence[str],
    seeds: Sequence[int],
    gen: GenSettings,
    scorer: Scorer,
    vocabulary: Mapping[str, str],
    min_consistency: float,
    min_effect: float,
    groups: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """`discover_attributes` for raw directions (the controls): one row per name (column
    `direction`), steering = adding deltas[i] (d,) at the chosen tokens. base: the unsteered
    images (P*S, H, W, 3) of the same prompts and seeds."""
    ps, ss = _grid(prompts, seeds)
    judge = AttributeJudge(scorer, vocabulary, groups)
    base_emb = scorer.images(base)
    flat = _generate_directions(pipe, ps, ss, deltas, gen, base.shape)
    rows = [
        {"direction": n, **judge.row(scorer.images(img), base_emb)} | {"norm": float(d.norm())}
        for n, d, img in zip(names, deltas, flat, strict=True)
    ]
    cols = ["direction", "attribute", "effect", "consistency", "runner_up", "preservation", "norm"]
    return keep_and_rank(pd.DataFrame(rows, columns=cols), min_consistency, min_effect)


def concept_directions(
    acts: np.ndarray, prompt_of_row: np.ndarray, prompts: Sequence[str], words: Sequence[str]
) -> dict[str, np.ndarray]:
    """Each word's text-embedding direction at the site (d,): the mean activation over the tokens
    of corpus prompts containing the word minus over the others' (words in every or no prompt
    are left out). acts: (rows, d); prompt_of_row: (rows,) prompt index."""
    tokens = [set(p.lower().split()) for p in prompts]
    x = np.asarray(acts, dtype=np.float32)
    out = {}
    for w in words:
        has = np.array([w.lower() in t for t in tokens])[np.asarray(prompt_of_row)]
        if has.all() or not has.any():
            continue
        out[w] = x[has].mean(0) - x[~has].mean(0)
    return out


def random_directions(n: int, d: int, seed: int) -> np.ndarray:
    """n isotropic random unit directions (n, d), seeded."""
    g = np.random.default_rng([int(seed), 4099]).standard_normal((n, d))
    return (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)


def scaled(direction: np.ndarray | torch.Tensor, norm: float) -> torch.Tensor:
    """direction rescaled to the given norm, float32 tensor (d,)."""
    t = torch.as_tensor(np.asarray(direction, dtype=np.float32))
    return t * (float(norm) / t.norm().clamp_min(1e-12))


def projection_concepts(
    acts: np.ndarray,
    prompt_of_row: np.ndarray,
    prompts: Sequence[str],
    words: Sequence[str],
    directions: np.ndarray,
) -> list[str]:
    """The input-side concept of each direction (m, d) by the latents' procedure: per prompt the
    max projection over its tokens, then the word with the largest prompt contrast."""
    proj = torch.from_numpy(np.asarray(acts, dtype=np.float32) @ directions.T)  # (rows, m)
    per_prompt = torch.full((len(prompts), proj.shape[1]), -torch.inf)
    idx = torch.from_numpy(np.array(prompt_of_row, dtype=np.int64))[:, None].expand_as(proj)
    per_prompt.scatter_reduce_(0, idx, proj, reduce="amax")
    per_prompt[torch.isinf(per_prompt)] = 0.0
    contrast = word_contrast(per_prompt.numpy(), prompts, words)  # (words, m)
    return [words[i] for i in contrast.argmax(0)]


CONTROL_COLUMNS = [
    "sae",
    "condition",
    "concept",
    "prompt",
    "seed",
    "scored",
    "effect",
    "colour_effect",
    "norm",
]


def score_blocks(
    blocks: Mapping[tuple[str, str], np.ndarray],
    base: np.ndarray,
    ps: Sequence[str],
    ss: Sequence[int],
    texts: Mapping[str, str],
    scorer: Scorer,
    colours: Mapping[str, Sequence[int]] | None,
) -> pd.DataFrame:
    """Long table: for every image block {(condition, steered concept): (P*S, H, W, 3)}, every
    (prompt, seed) and every scored concept of `texts`, the CLIP-score change vs the unsteered
    image (effect) and, for a colour, the change of its pixel fraction (colour_effect)."""
    names = list(texts)
    text_emb = scorer.texts([texts[c] for c in names])
    base_clip = clip_scores(scorer.images(base), text_emb).numpy()  # (P*S, C)
    base_col = colour_fractions(base, colours) if colours else {}
    parts = []
    for (condition, concept), imgs in blocks.items():
        eff = clip_scores(scorer.images(imgs), text_emb).numpy() - base_clip
        col = colour_fractions(imgs, colours) if colours else {}
        for k, scored in enumerate(names):
            ce = col[scored] - base_col[scored] if scored in col else np.full(len(ps), np.nan)
            parts.append(
                pd.DataFrame(
                    {
                        "condition": condition,
                        "concept": concept,
                        "prompt": list(ps),
                        "seed": list(ss),
                        "scored": scored,
                        "effect": eff[:, k],
                        "colour_effect": ce,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def steering_controls(
    pipe: Any,
    sae_name: str,
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    latent_images: Mapping[str, np.ndarray],
    base: np.ndarray,
    prompts: Sequence[str],
    seeds: Sequence[int],
    gen: GenSettings,
    scorer: Scorer,
    texts: Mapping[str, str],
    colours: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """The steering controls at one strength (the largest): for every condition {condition:
    {concept: raw direction (d,)}} (random direction, random latent, text direction; each
    norm-matched to the concept latent's change) generate the same prompts and seeds, and score
    them with the concept latent's own images (`latent_images` {concept: (P*S, H, W, 3)},
    condition "latent") against every concept of `texts` (`score_blocks`). base: unsteered images
    (P*S, H, W, 3). Returns the long table (CONTROL_COLUMNS)."""
    ps, ss = _grid(prompts, seeds)
    keys = [(cond, c) for cond, per in deltas.items() for c in per]
    flat = _generate_directions(pipe, ps, ss, [deltas[k][c] for k, c in keys], gen, base.shape)
    blocks = {("latent", c): img for c, img in latent_images.items()}
    blocks |= dict(zip(keys, flat, strict=True))
    table = score_blocks(blocks, base, ps, ss, texts, scorer, colours)
    norms = {k: float(deltas[k[0]][k[1]].norm()) for k in keys}
    table["norm"] = [
        norms.get(k, np.nan) for k in zip(table["condition"], table["concept"], strict=True)
    ]
    table.insert(0, "sae", sae_name)
    return table[CONTROL_COLUMNS]
