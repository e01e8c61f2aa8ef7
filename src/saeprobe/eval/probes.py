"""Linear probes: multinomial logistic regression in torch, tuned on a held-out split.

Scaling: features are centred on the training mean and divided by their training standard
deviation, floored at `std_floor` times the median standard deviation of the non-constant
features. Centring is a reparametrisation the unpenalised bias absorbs; the scale is what sets
each feature's share of the L2 penalty, and a rare SAE latent (active on a handful of images,
tiny standard deviation) divided by its own standard deviation would become a huge, barely
penalised memorisation feature. With the floor, no feature is blown up by more than
1 / std_floor times a typical one; dense features (raw activations) are untouched.

Fit: full-batch L-BFGS (deterministic on CPU) until the largest absolute gradient entry of the
penalised loss is at most `grad_tol` or `max_iter` iterations are spent; every fit records its
final loss, gradient norm, iterations and whether it converged (`ProbeFit`). The L2 penalty is
chosen from a grid by accuracy on a seeded held-out fraction of the training set, walking the
grid from the strongest penalty down, each fit warm-started from the previous solution (the
regularisation path); the chosen penalty is refit on the whole training set from its split
solution. The problem is strictly convex for a positive penalty, so warm and cold starts reach
the same probe.

Sparse probes for "how few units carry the signal": `rank_features` (one global ranking by
ANOVA F) and `per_class_mask` (each class keeps its own k units, ranked one-vs-rest), the mask
given to `fit_probe` so every class's weight vector has at most k non-zeros.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.feature_selection import f_classif

log = logging.getLogger(__name__)

MAX_ITER = 500
GRAD_TOL = 1e-4
STD_FLOOR = 0.1


@dataclass(frozen=True)
class ProbeFit:
    """How a fit ended: penalised mean cross-entropy, the largest absolute gradient entry,
    L-BFGS iterations, and whether the gradient reached the tolerance."""

    loss: float
    grad_norm: float
    iterations: int
    converged: bool

    def columns(self) -> dict[str, float | int | bool]:
        """Table columns probe_loss, probe_grad_norm, probe_iters, probe_converged."""
        return {
            "probe_loss": self.loss,
            "probe_grad_norm": self.grad_norm,
            "probe_iters": self.iterations,
            "probe_converged": self.converged,
        }


NO_FIT = ProbeFit(float("nan"), float("nan"), 0, False)


@dataclass
class LinearProbe:
    """mean, std: (d,) scaling; weight: (d, n_classes) (zero outside the mask); bias:
    (n_classes,); fit: how the final fit ended."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    weight_decay: float
    fit: ProbeFit = NO_FIT

    def logits(self, x: np.ndarray) -> torch.Tensor:
        """x: (n, d) -> (n, n_classes) float32 logits on CPU."""
        xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
        return ((xt - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """(n,) predicted class ids; `classes` restricts the argmax to those class ids."""
        logits = self.logits(x)
        if classes is not None:
            mask = torch.full((logits.shape[1],), float("-inf"))
            mask[torch.as_tensor(classes, dtype=torch.long)] = 0.0
            logits = logits + mask
        return logits.argmax(dim=1).numpy()


def feature_scale(
    x: torch.Tensor, std_floor: float = STD_FLOOR
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale of x (n, d): the mean, and the standard deviation floored at
    `std_floor` times the median of the non-constant features' (module docstring)."""
    mean = x.mean(dim=0)
    std = x.std(dim=0) if len(x) > 1 else torch.ones_like(mean)
    alive = std[std > 1e-6]
    floor = std_floor * float(alive.median()) if len(alive) else 1.0
    return mean, std.clamp_min(max(floor, 1e-6))


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    weight_decay: float,
    max_iter: int,
    grad_tol: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, ProbeFit]:
    """L-BFGS on x (n, d) scaled, y (n,): (weight (d, C), bias (C,), how it ended).

    init: a starting (weight, bias), else zeros; mask: (d, C) bool, the weights allowed to be
    non-zero.
    """
    d = x.shape[1]
    start_w = torch.zeros(d, n_classes, device=x.device) if init is None else init[0].clone()
    start_b = torch.zeros(n_classes, device=x.device) if init is None else init[1].clone()
    keep = None if mask is None else mask.to(device=x.device, dtype=x.dtype)
    if keep is not None:
        start_w = start_w * keep
    weight = start_w.requires_grad_(True)
    bias = start_b.requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter + 5,
        tolerance_grad=grad_tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        w = weight if keep is None else weight * keep
        loss = torch.nn.functional.cross_entropy(x @ w + bias, y)
        loss = loss + 0.5 * weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    iterations = int(optimiser.state[optimiser._params[0]].get("n_iter", 0))
    loss = float(closure().detach())
    grad_norm = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    w = weight.detach() if keep is None else weight.detach() * keep
    fit = ProbeFit(loss, grad_norm, iterations, grad_norm <= grad_tol)
    return w, bias.detach(), fit


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    weight_decays: Sequence[float],
    val_fraction: float,
    seed: int,
    max_iter: int = MAX_ITER,
    device: torch.device | str = "cpu",
    grad_tol: float = GRAD_TOL,
    std_floor: float = STD_FLOOR,
    warm_start: bool = True,
    mask: np.ndarray | None = None,
) -> LinearProbe:
    """Train a probe on x (n, d), y (n,) int class ids; the penalty is tuned on a held-out split
    (module docstring). mask: (d, n_classes) bool, the weights allowed to be non-zero (None:
    all). A fit that ends unconverged is logged; the final fit's diagnostics are in `.fit`.

    The fit runs on `device` (a GPU for ImageNet-sized problems); the probe is returned on CPU.
    """
    torch.manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    mean, std = feature_scale(xt, std_floor)
    xs = (xt - mean) / std
    keep = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=bool))
    if keep is not None and keep.shape != (x.shape[1], n_classes):
        raise ValueError(
            f"fit_probe: mask shape {tuple(keep.shape)}, expected {(x.shape[1], n_classes)}"
        )
    decays = sorted(set(weight_decays), reverse=True)  # strongest penalty first
    solve = dict(n_classes=n_classes, max_iter=max_iter, grad_tol=grad_tol, mask=keep)
    best, start = decays[0], None
    if len(decays) > 1 and val_fraction > 0:
        order = np.random.default_rng(seed).permutation(len(xs))
        n_val = max(1, round(val_fraction * len(xs)))
        val = torch.from_numpy(order[:n_val]).to(device)
        train = torch.from_numpy(order[n_val:]).to(device)
        scores, solutions, init = [], [], None
        for wd in decays:
            w, b, fit = _fit(xs[train], yt[train], weight_decay=wd, init=init, **solve)
            _warn(fit, wd, "split")
            init = (w, b) if warm_start else None
            solutions.append((w, b))
            scores.append(float(((xs[val] @ w + b).argmax(dim=1) == yt[val]).float().mean()))
        pick = int(np.argmax(scores))  # ties: the strongest penalty
        best = decays[pick]
        start = solutions[pick] if warm_start else None
    weight, bias, fit = _fit(xs, yt, weight_decay=best, init=start, **solve)
    _warn(fit, best, "final")
    return LinearProbe(
        mean=mean.cpu(), std=std.cpu(), weight=weight.cpu(), bias=bias.cpu(), weight_decay=best,
        fit=fit,
    )  # fmt: skip


def _warn(fit: ProbeFit, weight_decay: float, what: str) -> None:
    if not fit.converged:
        log.warning(
            "probe (%s fit, weight decay %g) not converged after %d L-BFGS iterations: "
            "gradient %.3g, loss %.4g", what, weight_decay, fit.iterations, fit.grad_norm, fit.loss,
        )  # fmt: skip


def rank_features(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Feature indices by decreasing ANOVA F statistic of x (n, d) against labels y (n,).

    Constant features (F undefined) come last.
    """
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "features ... are constant"
        f, _ = f_classif(x, y)
    f = np.nan_to_num(f, nan=-1.0, posinf=np.finfo(np.float64).max)
    return np.argsort(-f, kind="stable")


def per_class_mask(
    x: np.ndarray, y: np.ndarray, n_classes: int, k: int, std_floor: float = STD_FLOOR
) -> np.ndarray:
    """(d, n_classes) bool: for each class the k features of x (n, d) whose one-vs-rest mean
    difference, in units of the probe's feature scale, is largest in absolute value.

    A per-class sparse probe: how few units each class needs (with 1,000 classes a global top-k
    of a few hundred units leaves most classes with none of their own).
    """
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    _, scale = feature_scale(xt, std_floor)
    onehot = torch.nn.functional.one_hot(yt, n_classes).to(xt.dtype)  # (n, C)
    counts = onehot.sum(dim=0)  # (C,)
    sums = onehot.T @ xt  # (C, d)
    inside = sums / counts.clamp_min(1)[:, None]
    outside = (xt.sum(dim=0) - sums) / (len(xt) - counts).clamp_min(1)[:, None]
    effect = ((inside - outside) / scale).abs()
    effect[counts == 0] = 0.0
    k = min(k, x.shape[1])
    top = torch.topk(effect, k, dim=1).indices  # (C, k)
    mask = np.zeros((x.shape[1], n_classes), dtype=bool)
    mask[top.numpy(), np.arange(n_classes)[:, None]] = True
    return mask
