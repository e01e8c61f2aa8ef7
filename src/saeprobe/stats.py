"""Uncertainty for the verdicts: paired bootstrap intervals and permutation p-values.

Every function takes an explicit seed; the same inputs always give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 1000
ALPHA = 0.05


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided (1 - ALPHA) interval and/or a p-value (NaN if none)."""

    value: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    p: float = float("nan")


def bootstrap(
    statistic: Callable[..., float],
    arrays: Sequence[np.ndarray],
    seed: int,
    n_boot: int = N_BOOT,
    strata: np.ndarray | None = None,
) -> Estimate:
    """Percentile bootstrap of `statistic(*arrays)` resampling rows of all arrays together.

    arrays: each (n, ...), row i of every array belongs to the same example (a paired
    bootstrap: the difference of two scores on the same examples keeps their correlation).
    strata: (n,) optional group labels; rows are resampled within each group so that group
    sizes stay fixed (e.g. in-distribution vs OOD examples of an AUROC).
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap: arrays of different lengths {[len(a) for a in arrays]}")
    value = float(statistic(*arrays))
    if n < 2:
        return Estimate(value)
    rng = np.random.default_rng([int(seed), 7919])
    groups = (
        [np.arange(n)]
        if strata is None
        else [np.flatnonzero(strata == g) for g in np.unique(strata)]
    )
    draws = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        draws[b] = statistic(*(a[idx] for a in arrays))
    return _percentile_estimate(value, draws)


def _percentile_estimate(value: float, draws: np.ndarray) -> Estimate:
    """`value` with the central (1 - ALPHA) percentile interval of its finite bootstrap draws."""
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return Estimate(value)
    lo, hi = np.quantile(draws, [ALPHA / 2, 1 - ALPHA / 2])
    return Estimate(value, float(lo), float(hi))


def permutation_p(observed: float, null: np.ndarray, greater: bool = True) -> float:
    """One-sided permutation p-value (1 + #{null at least as extreme}) / (1 + n_null)."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    extreme = null >= observed if greater else null <= observed
    return float((1 + extreme.sum()) / (1 + null.size))


def null_estimate(observed: float, null: np.ndarray, greater: bool = True) -> Estimate:
    """`observed` with the null's central (1 - ALPHA) band as its interval and its p-value."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if null.size == 0:
        return Estimate(observed)
    lo, hi = np.quantile(null, [ALPHA / 2, 1 - ALPHA / 2])
    return Estimate(observed, float(lo), float(hi), permutation_p(observed, null, greater))


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(score of an OOD example > score of an ID example), ties counted half (Mann-Whitney)."""
    scores = np.concatenate([id_scores, ood_scores])
    ranks = _average_ranks(scores)
    n_id, n_ood = len(id_scores), len(ood_scores)
    if n_id == 0 or n_ood == 0:
        return float("nan")
    return float((ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2) / (n_id * n_ood))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x (n,), tied values sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse]


def auroc_from_labels(is_ood: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of `scores` (n,) for the boolean labels `is_ood` (n,)."""
    is_ood = np.asarray(is_ood, dtype=bool)
    return auroc(scores[~is_ood], scores[is_ood])


def bootstrap_difference(
    statistic: Callable[..., float],
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    seed: int,
    n_boot: int = N_BOOT,
) -> Estimate:
    """Percentile bootstrap of statistic(*a) - statistic(*b) for two independent samples:
    the rows of `a` (arrays of the same length) and of `b` are resampled separately."""
    value = float(statistic(*a) - statistic(*b))
    rng = np.random.default_rng([int(seed), 7927])
    na, nb = len(a[0]), len(b[0])
    if na < 2 or nb < 2:
        return Estimate(value)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        ia, ib = rng.integers(0, na, na), rng.integers(0, nb, nb)
        draws[i] = statistic(*(x[ia] for x in a)) - statistic(*(x[ib] for x in b))
    return _percentile_estimate(value, draws)
