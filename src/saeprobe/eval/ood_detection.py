"""Task `ood_detection`: do SAE codes support out-of-distribution detection?

Every score is "higher = more out-of-distribution", fixed by its definition (never by the data):
- raw `msp`: minus the maximum softmax probability of a linear head trained on the raw
  in-distribution training features; raw `energy`: minus logsumexp of the head's logits;
- raw `mahalanobis`: the minimum over classes of the Mahalanobis distance to the class mean
  under the shared (tied) covariance of the training features;
- `knn` (raw and SAE): the distance of the L2-normalised feature to its k-th nearest
  neighbour among the normalised training features (Sun et al. 2022);
- SAE `recon_error`: relative squared reconstruction error ||x - x_hat||^2 / ||x||^2;
- SAE `activation_mass`: minus the sum of the image's SAE codes (in-distribution inputs are
  expected to excite the learned latents more);
- SAE `profile`: minus the highest cosine similarity between the image's code vector and the
  class-conditional mean code vectors ("latent profiles") of the training set.
AUROC (scikit-learn) takes OOD as the positive class. FPR@95TPR is the fraction of OOD images
accepted at the threshold that accepts 95% of in-distribution images.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from saeprobe.eval.probes import LinearProbe


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC with OOD as positive; scores: higher = more OOD."""
    y = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    return float(roc_auc_score(y, np.r_[id_scores, ood_scores]))


def fpr_at_95_tpr(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Fraction of OOD images with score <= the 95th percentile of in-distribution scores."""
    threshold = np.quantile(id_scores, 0.95, method="higher")
    return float(np.mean(ood_scores <= threshold))


def _normalise(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


class KNNScore:
    """k-th nearest-neighbour distance of normalised features to a normalised bank."""

    def __init__(
        self, bank: np.ndarray, k: int, chunk: int = 4096, device: torch.device | str = "cpu"
    ) -> None:
        self.bank = _normalise(bank).to(device)
        self.k = min(k, len(bank))
        self.chunk = chunk

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: (n, d) -> (n,) distance to the k-th nearest bank row."""
        q = _normalise(x)
        out = []
        for start in range(0, len(q), self.chunk):
            sims = q[start : start + self.chunk].to(self.bank.device) @ self.bank.T
            kth = sims.topk(self.k, dim=1).values[:, -1]
            out.append(torch.sqrt((2 - 2 * kth).clamp_min(0)).cpu().numpy())
        return np.concatenate(out)


class MahalanobisScore:
    """Minimum class-conditional Mahalanobis distance under a tied covariance (Lee et al. 2018)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int, ridge: float = 1e-6) -> None:
        xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        means = torch.zeros(n_classes, xt.shape[1], dtype=torch.float64)
        means.index_add_(0, yt, xt)
        counts = torch.bincount(yt, minlength=n_classes).clamp_min(1).unsqueeze(1)
        self.means = means / counts
        centred = xt - self.means[yt]
        cov = centred.T @ centred / max(len(xt) - 1, 1)
        cov += (
            ridge
            * cov.diagonal().mean().clamp_min(1e-12)
            * torch.eye(cov.shape[0], dtype=cov.dtype)
        )
        self.precision = torch.linalg.pinv(cov, hermitian=True)
        self.present = torch.bincount(yt, minlength=n_classes) > 0

    def __call__(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """x: (n, d) -> (n,) squared distance to the closest class mean."""
        means = self.means[self.present]
        mean_term = ((means @ self.precision) * means).sum(dim=1)
        out = []
        for start in range(0, len(x), chunk):
            xt = torch.from_numpy(np.asarray(x[start : start + chunk], dtype=np.float64))
            xp = xt @ self.precision
            dist = (xp * xt).sum(dim=1, keepdim=True) - 2 * xp @ means.T + mean_term
            out.append(dist.min(dim=1).values.numpy())
        return np.concatenate(out)


class ProfileScore:
    """Minus the best cosine between a code vector and the class-mean code vectors."""

    def __init__(self, codes: np.ndarray, y: np.ndarray, n_classes: int) -> None:
        ct = torch.from_numpy(np.asarray(codes, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        profiles = torch.zeros(n_classes, ct.shape[1])
        profiles.index_add_(0, yt, ct)
        present = torch.bincount(yt, minlength=n_classes) > 0
        self.profiles = _normalise(profiles[present].numpy())

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        return -(_normalise(codes) @ self.profiles.T).max(dim=1).values.numpy()


def head_scores(probe: LinearProbe, x: np.ndarray) -> dict[str, np.ndarray]:
    """MSP and energy OOD scores of a trained linear head: {"msp": (n,), "energy": (n,)}."""
    logits = probe.logits(x)
    msp = torch.softmax(logits, dim=1).max(dim=1).values
    energy = torch.logsumexp(logits, dim=1)
    return {"msp": (-msp).numpy(), "energy": (-energy).numpy()}
