"""Linear probes: multinomial logistic regression in torch, tuned on a held-out split.

Features are standardised with the training mean and standard deviation; the L2 penalty is
chosen from a grid by accuracy on a seeded held-out fraction of the training set, then the
probe is refit on the whole training set. Full-batch L-BFGS: deterministic on CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.feature_selection import f_classif


@dataclass
class LinearProbe:
    """mean, std: (d,) standardisation; weight: (d, n_classes); bias: (n_classes,)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    weight_decay: float

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


def _fit(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.zeros(x.shape[1], n_classes, device=x.device, requires_grad=True)
    bias = torch.zeros(n_classes, device=x.device, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y)
        loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    weight_decays: Sequence[float],
    val_fraction: float,
    seed: int,
    max_iter: int = 100,
    device: torch.device | str = "cpu",
) -> LinearProbe:
    """Train a probe on x (n, d), y (n,) int class ids; the penalty is tuned on a held-out split.

    The fit runs on `device` (a GPU for ImageNet-sized problems); the probe is returned on CPU.
    """
    torch.manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    mean = xt.mean(dim=0)
    std = xt.std(dim=0).clamp_min(1e-6)
    xs = (xt - mean) / std
    decays = list(weight_decays)
    if len(decays) > 1 and val_fraction > 0:
        order = np.random.default_rng(seed).permutation(len(xs))
        n_val = max(1, round(val_fraction * len(xs)))
        val = torch.from_numpy(order[:n_val]).to(device)
        train = torch.from_numpy(order[n_val:]).to(device)
        scores = []
        for wd in decays:
            w, b = _fit(xs[train], yt[train], n_classes, wd, max_iter)
            scores.append(float(((xs[val] @ w + b).argmax(dim=1) == yt[val]).float().mean()))
        best = decays[int(np.argmax(scores))]
    else:
        best = decays[0]
    weight, bias = _fit(xs, yt, n_classes, best, max_iter)
    return LinearProbe(
        mean=mean.cpu(), std=std.cpu(), weight=weight.cpu(), bias=bias.cpu(), weight_decay=best
    )


def rank_features(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Feature indices by decreasing ANOVA F statistic of x (n, d) against labels y (n,).

    Constant features (F undefined) come last.
    """
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "features ... are constant"
        f, _ = f_classif(x, y)
    f = np.nan_to_num(f, nan=-1.0, posinf=np.finfo(np.float64).max)
    return np.argsort(-f, kind="stable")
