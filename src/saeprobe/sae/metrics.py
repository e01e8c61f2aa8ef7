"""Reconstruction and sparsity metrics of an SAE on held-out activations.

Definitions (raw model units, sums accumulated in float64):
* nmse: sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - mean(x)||^2 (fraction of variance unexplained;
  predicting the mean gives 1, a perfect reconstruction 0). explained_variance = 1 - nmse.
* mse: mean_n ||x_n - x_hat_n||^2.
* l0: mean number of active (non-zero) latents per input.
* dead_frac: fraction of latents never active on the evaluated set.
* dense_frac: fraction of latents active on more than `dense_threshold` (10%) of the inputs.
* cos_sim: mean_n cos(x_n, x_hat_n).
* downstream_recovered: (acc_sae - acc_ablated) / (acc_clean - acc_ablated).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from saeprobe.sae.models import SAE


class _Moments:
    """Running mean and total squared deviation of vectors (Chan et al. merge), float64."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = 0.0

    def update(self, x: Tensor) -> None:
        x = x.detach().to("cpu", torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(0)
        m2_b = float((x - mean_b).pow(2).sum())
        delta = mean_b - self.mean
        n = self.n + nb
        self.m2 += m2_b + float(delta.pow(2).sum()) * self.n * nb / n
        self.mean += delta * (nb / n)
        self.n = n


@torch.no_grad()
def evaluate(
    sae: SAE,
    batches: Iterable[Tensor],
    device: torch.device | str | None = None,
    dense_threshold: float = 0.1,
    return_frequencies: bool = False,
) -> dict[str, Any]:
    """Metrics of `sae` on raw activation batches (batch, d_in); see the module docstring.

    Returns floats: nmse, explained_variance, mse, l0, dead_frac, dense_frac, cos_sim,
    n_inputs (and `frequencies`, a list of per-latent activation frequencies, if asked).
    """
    was_training = sae.training
    sae.eval()
    device = torch.device(device) if device is not None else sae.W_enc.device
    moments = _Moments(sae.d_in)
    sq_err = 0.0
    cos_sum = 0.0
    active_sum = 0.0
    counts = torch.zeros(sae.width, dtype=torch.float64)
    for batch in batches:
        x = batch.to(device=device, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != sae.d_in:
            raise ValueError(
                f"evaluate: expected batches of shape (batch, {sae.d_in}), got {tuple(x.shape)}"
            )
        codes = sae.encode(x)
        x_hat = sae.decode(codes)
        x64, xh64 = x.double(), x_hat.double()
        sq_err += float((x64 - xh64).pow(2).sum())
        cos_sum += float(F.cosine_similarity(x64, xh64, dim=-1, eps=1e-12).sum())
        active = codes != 0
        active_sum += float(active.sum())
        counts += active.sum(0).to("cpu", torch.float64)
        moments.update(x)
    sae.train(was_training)
    n = moments.n
    if n == 0:
        raise ValueError("evaluate: no held-out activations were given")
    freq = counts / n
    nmse = sq_err / moments.m2 if moments.m2 > 0 else float("nan")
    out: dict[str, Any] = {
        "nmse": nmse,
        "explained_variance": 1.0 - nmse,
        "mse": sq_err / n,
        "l0": active_sum / n,
        "dead_frac": float((counts == 0).double().mean()),
        "dense_frac": float((freq > dense_threshold).double().mean()),
        "cos_sim": cos_sum / n,
        "n_inputs": n,
    }
    if return_frequencies:
        out["frequencies"] = freq.tolist()
    return out


def nmse(x: Tensor, x_hat: Tensor) -> float:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over rows of x, x_hat: (n, d), float64."""
    x64, xh64 = x.detach().double(), x_hat.detach().double()
    return float((x64 - xh64).pow(2).sum() / (x64 - x64.mean(0)).pow(2).sum())


def downstream_recovered(clean_acc: float, sae_acc: float, ablated_acc: float) -> float:
    """(sae - ablated) / (clean - ablated): 1 when splicing the SAE in costs nothing, 0 when
    it is as bad as ablating the site; NaN when clean == ablated."""
    denom = clean_acc - ablated_acc
    if denom == 0:
        return float("nan")
    return (sae_acc - ablated_acc) / denom


@torch.no_grad()
def reconstruct(sae: SAE, x: Tensor, chunk: int = 8192) -> Tensor:
    """SAE reconstruction of activations of any leading shape, for splicing into a model.

    x: (..., d_in), e.g. (batch, tokens, d_in) -> x_hat with the same shape, dtype and device.
    """
    if x.shape[-1] != sae.d_in:
        raise ValueError(f"reconstruct: expected last dimension {sae.d_in}, got {tuple(x.shape)}")
    flat = x.reshape(-1, x.shape[-1])
    param = sae.W_enc
    out = torch.empty(flat.shape, dtype=x.dtype, device=x.device)
    for start in range(0, flat.shape[0], chunk):
        part = flat[start : start + chunk].to(device=param.device, dtype=param.dtype)
        out[start : start + chunk] = sae.decode(sae.encode(part)).to(x.device, x.dtype)
    return out.reshape(x.shape)
