"""Activations with planted sparse structure, for tests and benchmarks.

Each row is offset + sum of `k` dictionary atoms (unit vectors, drawn with Zipf-like
frequencies) times positive coefficients + Gaussian noise: a ground truth an SAE should find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Planted:
    """x: (n, d) float32 activations; atoms: (n_atoms, d) unit-norm ground-truth dictionary;
    offset: (d,) common mean direction added to every row."""

    x: np.ndarray
    atoms: np.ndarray
    offset: np.ndarray


def planted_sparse(
    n: int,
    d: int,
    n_atoms: int,
    k: int,
    seed: int = 0,
    noise: float = 0.05,
    offset_norm: float = 1.0,
    zipf: float = 0.5,
    chunk: int = 65_536,
) -> Planted:
    """Rows x_n = offset + sum_{j<k} c_nj * atoms[i_nj] + noise, see the module docstring.

    Atom i is drawn with probability proportional to (i + 1)^-zipf (with replacement);
    c ~ 0.5 + Exp(1); noise is isotropic with total norm ~ `noise`.
    """
    gen = torch.Generator().manual_seed(int(seed))
    atoms = torch.randn(n_atoms, d, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    offset = torch.randn(d, generator=gen)
    offset *= offset_norm / offset.norm()
    probs = (torch.arange(n_atoms, dtype=torch.float64) + 1.0).pow(-zipf)
    probs /= probs.sum()
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        idx = torch.multinomial(probs, m * k, replacement=True, generator=gen).view(m, k)
        coef = 0.5 + torch.empty(m, k).exponential_(1.0, generator=gen)
        rows = F.embedding_bag(idx, atoms, mode="sum", per_sample_weights=coef)
        rows += offset + torch.randn(m, d, generator=gen) * (noise / d**0.5)
        out[start : start + m] = rows.numpy()
    return Planted(x=out, atoms=atoms.numpy(), offset=offset.numpy())
