"""Per-latent statistics of one SAE on one dataset, accumulated over chunks of codes (numpy).

Definitions (rows are activation rows: one per image for a single-token site, one per token
otherwise; an example is an image, a prompt or an image-caption pair):
- frequency: the fraction of rows where the latent is active (code > 0);
- mean activation: the mean code over the rows where it is active;
- alive: active on at least one row;
- top examples: the `top_n` examples with the highest code, an example's code being its
  highest over its rows;
- histogram: counts of the active codes in log-spaced bins `HIST_EDGES` (codes below the
  first edge fall in the first bin, above the last in the last);
- decoder neighbours: the latents whose decoder directions have the highest cosine similarity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# 24 bins per decade from 1e-3 to 1e3 (each 10% wider than the last): covers the codes of every
# SAE the pipeline trains; a page stores only the range a latent's codes fill
HIST_EDGES = np.geomspace(1e-3, 1e3, 6 * 24 + 1)


@dataclass
class CodeChunk:
    """Codes of whole examples: codes (rows, width) float32; example (rows,) int64 dataset
    index of each row, non-decreasing (an example's rows are contiguous)."""

    codes: np.ndarray
    example: np.ndarray


@dataclass
class LatentStats:
    """Per latent (width,): rows active, sum of active codes, max code; histogram
    (width, bins) int64; top (width, top_n) example indices and values (-1 / 0 where fewer
    examples were seen), ordered by value, highest first."""

    rows: int
    active: np.ndarray
    total: np.ndarray
    max: np.ndarray
    histogram: np.ndarray
    top_examples: np.ndarray
    top_values: np.ndarray

    @property
    def frequency(self) -> np.ndarray:
        return self.active / max(self.rows, 1)

    @property
    def mean_activation(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.active > 0, self.total / np.maximum(self.active, 1), 0.0)

    @property
    def alive(self) -> np.ndarray:
        return self.active > 0


def per_example_max(chunk: CodeChunk) -> tuple[np.ndarray, np.ndarray]:
    """(examples (m,), codes (m, width)): each example's highest code over its rows."""
    example = np.asarray(chunk.example)
    if len(example) and np.any(np.diff(example) < 0):
        raise ValueError("atlas: an example's rows must be contiguous and in order")
    starts = np.flatnonzero(np.r_[True, example[1:] != example[:-1]]) if len(example) else []
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == len(example):
        return example, chunk.codes
    return example[starts], np.maximum.reduceat(chunk.codes, starts, axis=0)


def accumulate(chunks: Iterable[CodeChunk], width: int, top_n: int) -> LatentStats:
    """Stream `chunks` (whole examples each, in dataset order; codes >= 0) into LatentStats."""
    bins = len(HIST_EDGES) - 1
    rows = 0
    active = np.zeros(width, np.int64)
    total = np.zeros(width, np.float64)
    high = np.zeros(width, np.float64)
    histogram = np.zeros((width, bins), np.int64)
    top_ex = np.full((top_n, width), -1, np.int64)
    top_val = np.zeros((top_n, width), np.float32)
    for chunk in chunks:
        codes = np.asarray(chunk.codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != width:
            raise ValueError(f"atlas: expected codes of shape (rows, {width}), got {codes.shape}")
        rows += len(codes)
        r, c = np.nonzero(codes > 0)
        values = codes[r, c]
        active += np.bincount(c, minlength=width)
        total += np.bincount(c, weights=values, minlength=width)
        high = np.maximum(high, codes.max(axis=0, initial=0))
        b = np.clip(np.searchsorted(HIST_EDGES, values, side="right") - 1, 0, bins - 1)
        histogram += np.bincount(c * bins + b, minlength=width * bins).reshape(width, bins)
        examples, ex_codes = per_example_max(chunk)
        vals = np.concatenate([top_val, ex_codes])
        idx = np.concatenate([top_ex, np.broadcast_to(examples[:, None], ex_codes.shape)])
        vals = np.where(idx >= 0, vals, -np.inf)
        if len(vals) > top_n:
            keep = np.argpartition(-vals, top_n - 1, axis=0)[:top_n]
            vals = np.take_along_axis(vals, keep, axis=0)
            idx = np.take_along_axis(idx, keep, axis=0)
        order = np.argsort(-vals, axis=0, kind="stable")
        top_val = np.take_along_axis(vals, order, axis=0)
        top_ex = np.take_along_axis(idx, order, axis=0)
        top_ex[~np.isfinite(top_val)] = -1
        top_val = np.where(np.isfinite(top_val), top_val, 0).astype(np.float32)
    return LatentStats(rows, active, total, high, histogram, top_ex.T.copy(), top_val.T.copy())


def decoder_neighbours(
    w_dec: np.ndarray, n: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Each latent's `n` nearest latents by decoder cosine similarity, itself excluded.

    w_dec: (width, d). Returns indices (width, n) int64 and cosines (width, n) float32, highest
    first (n is cut to width - 1)."""
    w = np.asarray(w_dec, dtype=np.float32)
    w = w / np.linalg.norm(w, axis=1, keepdims=True).clip(min=1e-12)
    width = len(w)
    n = min(n, width - 1)
    out_i = np.zeros((width, n), np.int64)
    out_c = np.zeros((width, n), np.float32)
    for a in range(0, width, chunk):
        sims = w[a : a + chunk] @ w.T
        sims[np.arange(len(sims)), np.arange(a, a + len(sims))] = -np.inf
        part = np.argpartition(-sims, n - 1, axis=1)[:, :n] if n else np.zeros((len(sims), 0), int)
        vals = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        out_i[a : a + chunk] = np.take_along_axis(part, order, axis=1)
        out_c[a : a + chunk] = np.take_along_axis(vals, order, axis=1)
    return out_i, out_c


def top_token_codes(
    chunks: Iterable[CodeChunk], top_examples: np.ndarray, latents: Iterable[int]
) -> dict[tuple[int, int], np.ndarray]:
    """{(latent, example): (rows of the example,) float32 codes of that latent on each row},
    for every listed latent and each of its top examples (top_examples: (width, top_n), -1 =
    none). chunks: the same stream as for `accumulate`."""
    wanted: dict[int, list[int]] = {}
    for j in latents:
        for e in top_examples[j]:
            if e >= 0:
                wanted.setdefault(int(e), []).append(int(j))
    out: dict[tuple[int, int], np.ndarray] = {}
    for chunk in chunks:
        example = np.asarray(chunk.example)
        for e in np.unique(example):
            if int(e) not in wanted:
                continue
            a, b = np.searchsorted(example, e, "left"), np.searchsorted(example, e, "right")
            for j in wanted[int(e)]:
                out[(j, int(e))] = np.asarray(chunk.codes[a:b, j], dtype=np.float32)
    return out
