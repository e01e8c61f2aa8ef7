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

Memory: the input is never copied (16,384 SAE latents x 100,000 images is 6.5 GB). The
scaling, the loss and its gradient, the held-out accuracy and the statistics below are summed
over chunks of `CHUNK` rows, each chunk standardised on its own; the held-out split indexes
rows of the input, and a probe on a column subset (`columns`) reads its columns chunk by chunk.

Sparse probes for "how few units carry the signal": `rank_features` (one global ranking by
ANOVA F) and `per_class_mask` (each class keeps its own k units, ranked one-vs-rest), the mask
given to `fit_probe` so every class's weight vector has at most k non-zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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
    """mean, std: (d',) scaling; weight: (d', n_classes) (zero outside the mask); bias:
    (n_classes,); fit: how the final fit ended; columns: (d',) the columns of the input it
    reads (None: all d' of them)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    weight_decay: float
    fit: ProbeFit = NO_FIT
    columns: np.ndarray | None = None

    def logits(self, x: np.ndarray) -> torch.Tensor:
        """x: (n, d) -> (n, n_classes) float32 logits on CPU, over row chunks (no copy of x)."""
        data = _as_rows(x, self.columns)
        out = torch.empty(len(data), self.weight.shape[1])
        for where, part in data.chunks():
            out[where] = _standardise(part, self.mean, self.std) @ self.weight + self.bias
        return out

    def predict(self, x: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """(n,) predicted class ids; `classes` restricts the argmax to those class ids."""
        logits = self.logits(x)
        if classes is not None:
            mask = torch.full((logits.shape[1],), float("-inf"))
            mask[torch.as_tensor(classes, dtype=torch.long)] = 0.0
            logits = logits + mask
        return logits.argmax(dim=1).numpy()


CHUNK = 2048  # rows per step of the scaling, the loss and the statistics


class _Rows:
    """A view of x (n, d) without copying it: the rows `rows` (sorted ids, None: all) and the
    columns `columns` (None: all), handed out in chunks of at most `chunk` rows."""

    def __init__(
        self,
        x: torch.Tensor,
        rows: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self.x, self.rows, self.columns, self.chunk = x, rows, columns, chunk

    def __len__(self) -> int:
        return len(self.x) if self.rows is None else len(self.rows)

    @property
    def width(self) -> int:
        return self.x.shape[1] if self.columns is None else len(self.columns)

    def subset(self, rows: torch.Tensor) -> _Rows:
        """The rows at positions `rows` (sorted) of this view."""
        ids = rows if self.rows is None else self.rows[rows]
        return _Rows(self.x, ids, self.columns, self.chunk)

    def chunks(self, dtype: torch.dtype = torch.float32) -> Iterator[tuple[slice, torch.Tensor]]:
        """(positions, (<= chunk, width) `dtype`) pairs covering the view in order."""
        for start in range(0, len(self), self.chunk):
            where = slice(start, min(start + self.chunk, len(self)))
            part = self.x[where] if self.rows is None else self.x[self.rows[where]]
            if self.columns is not None:
                part = part[:, self.columns]
            yield where, part.to(dtype)


def _as_rows(
    x: np.ndarray | torch.Tensor,
    columns: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    chunk: int = CHUNK,
) -> _Rows:
    """x (n, d) as a _Rows view: no copy on the CPU (any float dtype, strided arrays too)."""
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if xt.ndim != 2 or not xt.is_floating_point():
        raise ValueError(
            f"probe input: expected a 2-d float array, got {tuple(xt.shape)} {xt.dtype}"
        )
    xt = xt.to(device)
    cols = None if columns is None else torch.as_tensor(columns, dtype=torch.long, device=xt.device)
    return _Rows(xt, None, cols, chunk)


def _scale(data: _Rows, std_floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, floored std), each (width,) float32, from float64 sums over row chunks."""
    n = len(data)
    total = torch.zeros(data.width, dtype=torch.float64, device=data.x.device)
    for _, part in data.chunks(torch.float64):
        total += part.sum(dim=0)
    mean = total / max(n, 1)
    if n > 1:
        squares = torch.zeros_like(total)
        for _, part in data.chunks(torch.float64):
            squares += (part - mean).pow_(2).sum(dim=0)
        std = (squares / (n - 1)).sqrt()
    else:
        std = torch.ones_like(mean)
    alive = std[std > 1e-6]
    floor = std_floor * float(alive.median()) if len(alive) else 1.0
    return mean.float(), std.clamp_min(max(floor, 1e-6)).float()


def feature_scale(
    x: np.ndarray | torch.Tensor, std_floor: float = STD_FLOOR
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale of x (n, d), each (d,) float32: the mean, and the standard deviation
    floored at `std_floor` times the median of the non-constant features' (module docstring).
    Computed over row chunks: no copy of x."""
    return _scale(_as_rows(x), std_floor)


def _standardise(part: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (part - mean).div_(std)


def _fit(
    data: _Rows,
    y: torch.Tensor,
    scale: tuple[torch.Tensor, torch.Tensor],
    n_classes: int,
    weight_decay: float,
    max_iter: int,
    grad_tol: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, ProbeFit]:
    """L-BFGS on the rows of `data` (n, d) standardised by scale (mean, std), y (n,): (weight
    (d, C), bias (C,), how it ended). Loss and gradient are summed over row chunks, each
    chunk standardised on its own: the (n, d) standardised matrix never exists.

    init: a starting (weight, bias), else zeros; mask: (d, C) bool, the weights allowed to be
    non-zero.
    """
    d, device, n = data.width, data.x.device, len(data)
    mean, std = (s.to(device) for s in scale)
    start_w = torch.zeros(d, n_classes, device=device) if init is None else init[0].clone()
    start_b = torch.zeros(n_classes, device=device) if init is None else init[1].clone()
    keep = None if mask is None else mask.to(device=device, dtype=torch.float32)
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
        total = torch.zeros((), device=device)
        for where, part in data.chunks():  # mean cross-entropy = sum of the chunks' sums / n
            w = weight if keep is None else weight * keep
            logits = _standardise(part, mean, std) @ w + bias
            loss = torch.nn.functional.cross_entropy(logits, y[where], reduction="sum") / n
            loss.backward()
            total += loss.detach()
        w = weight if keep is None else weight * keep
        penalty = 0.5 * weight_decay * w.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    optimiser.step(closure)
    iterations = int(optimiser.state[optimiser._params[0]].get("n_iter", 0))
    loss = float(closure())
    grad_norm = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    w = weight.detach() if keep is None else weight.detach() * keep
    fit = ProbeFit(loss, grad_norm, iterations, grad_norm <= grad_tol)
    return w, bias.detach(), fit


def _accuracy(
    data: _Rows,
    y: torch.Tensor,
    scale: tuple[torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> float:
    mean, std = (s.to(data.x.device) for s in scale)
    hits = 0
    for where, part in data.chunks():
        hits += int(((_standardise(part, mean, std) @ weight + bias).argmax(1) == y[where]).sum())
    return hits / max(len(data), 1)


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
    columns: np.ndarray | None = None,
) -> LinearProbe:
    """Train a probe on x (n, d), y (n,) int class ids; the penalty is tuned on a held-out split
    (module docstring). columns: (d',) the columns of x the probe reads (None: all); mask:
    (d', n_classes) bool, the weights allowed to be non-zero (None: all). A fit that ends
    unconverged is logged; the final fit's diagnostics are in `.fit`.

    x is never copied on the CPU: the scaling, the loss and the held-out split are computed
    over row chunks of it (by index for the split). The fit runs on `device` (a GPU for
    ImageNet-sized problems: x is moved there once); the probe is returned on CPU.
    """
    torch.manual_seed(seed)
    data = _as_rows(x, columns, device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    scale = _scale(data, std_floor)
    keep = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=bool))
    if keep is not None and keep.shape != (data.width, n_classes):
        raise ValueError(
            f"fit_probe: mask shape {tuple(keep.shape)}, expected {(data.width, n_classes)}"
        )
    decays = sorted(set(weight_decays), reverse=True)  # strongest penalty first
    solve = dict(scale=scale, n_classes=n_classes, max_iter=max_iter, grad_tol=grad_tol, mask=keep)
    best, start = decays[0], None
    if len(decays) > 1 and val_fraction > 0:
        order = np.random.default_rng(seed).permutation(len(data))
        n_val = max(1, round(val_fraction * len(data)))
        val = torch.from_numpy(np.sort(order[:n_val])).to(device)
        train = torch.from_numpy(np.sort(order[n_val:])).to(device)
        data_train, data_val = data.subset(train), data.subset(val)
        scores, solutions, init = [], [], None
        for wd in decays:
            w, b, fit = _fit(data_train, yt[train], weight_decay=wd, init=init, **solve)
            _warn(fit, wd, "split")
            init = (w, b) if warm_start else None
            solutions.append((w, b))
            scores.append(_accuracy(data_val, yt[val], scale, w, b))
        pick = int(np.argmax(scores))  # ties: the strongest penalty
        best = decays[pick]
        start = solutions[pick] if warm_start else None
    weight, bias, fit = _fit(data, yt, weight_decay=best, init=start, **solve)
    _warn(fit, best, "final")
    return LinearProbe(
        mean=scale[0].cpu(), std=scale[1].cpu(), weight=weight.cpu(), bias=bias.cpu(),
        weight_decay=best, fit=fit,
        columns=None if columns is None else np.asarray(columns, dtype=np.int64),
    )  # fmt: skip


def probe_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """fit_probe's keyword options (max_iter, grad_tol, std_floor) present in a config's probe
    settings."""
    return {k: settings[k] for k in ("max_iter", "grad_tol", "std_floor") if k in settings}


def _warn(fit: ProbeFit, weight_decay: float, what: str) -> None:
    if not fit.converged:
        log.warning(
            "probe (%s fit, weight decay %g) not converged after %d L-BFGS iterations: "
            "gradient %.3g, loss %.4g", what, weight_decay, fit.iterations, fit.grad_norm, fit.loss,
        )  # fmt: skip


def f_statistic(x: np.ndarray, y: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """(d,) one-way ANOVA F statistic of each feature of x (n, d) against labels y (n,), the
    formula of scikit-learn's `f_classif` with float64 sums accumulated over row chunks (no
    copy of x). NaN for constant features (F undefined), inf where the classes differ and
    no class varies."""
    data = _as_rows(x, chunk=chunk)
    _, codes = np.unique(np.asarray(y), return_inverse=True)
    labels = torch.from_numpy(codes.astype(np.int64))
    n_classes, n, d = int(labels.max()) + 1 if len(labels) else 0, len(data), data.width
    sums = torch.zeros(n_classes, d, dtype=torch.float64)
    squares = torch.zeros(d, dtype=torch.float64)
    low = torch.full((d,), float("inf"), dtype=torch.float64)
    high = torch.full((d,), float("-inf"), dtype=torch.float64)
    for where, part in data.chunks(torch.float64):
        sums.index_add_(0, labels[where], part)
        squares += part.pow(2).sum(dim=0)
        low = torch.minimum(low, part.min(dim=0).values)
        high = torch.maximum(high, part.max(dim=0).values)
    counts = torch.bincount(labels, minlength=n_classes).double()
    total = sums.sum(dim=0)
    between = (sums.pow(2) / counts[:, None]).sum(dim=0) - total.pow(2) / n
    within = squares - total.pow(2) / n - between
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (between.numpy() / (n_classes - 1)) / (within.numpy() / (n - n_classes))
    f[(low == high).numpy()] = np.nan
    return f


def rank_features(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Feature indices by decreasing ANOVA F statistic (`f_statistic`) of x (n, d) against
    labels y (n,). Constant features (F undefined) come last."""
    f = np.nan_to_num(f_statistic(x, y), nan=-1.0, posinf=np.finfo(np.float64).max)
    return np.argsort(-f, kind="stable")


def per_class_mask(
    x: np.ndarray, y: np.ndarray, n_classes: int, k: int, std_floor: float = STD_FLOOR
) -> np.ndarray:
    """(d, n_classes) bool: for each class the k features of x (n, d) whose one-vs-rest mean
    difference, in units of the probe's feature scale, is largest in absolute value.

    A per-class sparse probe: how few units each class needs (with 1,000 classes a global top-k
    of a few hundred units leaves most classes with none of their own). Sums over row chunks
    in float64: no copy of x.
    """
    data = _as_rows(x)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    _, scale = _scale(data, std_floor)
    sums = torch.zeros(n_classes, data.width, dtype=torch.float64)  # (C, d)
    for where, part in data.chunks(torch.float64):
        sums.index_add_(0, yt[where], part)
    counts = torch.bincount(yt, minlength=n_classes).double()  # (C,)
    inside = sums / counts.clamp_min(1)[:, None]
    outside = (sums.sum(dim=0) - sums) / (len(data) - counts).clamp_min(1)[:, None]
    effect = ((inside - outside) / scale.double()).abs()
    effect[counts == 0] = 0.0
    k = min(k, data.width)
    top = torch.topk(effect, k, dim=1).indices  # (C, k)
    mask = np.zeros((data.width, n_classes), dtype=bool)
    mask[top.numpy(), np.arange(n_classes)[:, None]] = True
    return mask
