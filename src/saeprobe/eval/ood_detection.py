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

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from saeprobe.eval.features import (
    RAW,
    ModelSites,
    class_ids,
    load_site,
    reconstruction_error,
    sae_codes,
    site_layer,
)
from saeprobe.eval.probes import LinearProbe, fit_probe


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


# -- the task on a model's sites --


def ood_detection(
    sites: ModelSites,
    train_dataset: str,
    id_dataset: str,
    ood_datasets: Sequence[str],
    knn_k: int,
    max_train: int | None,
    weight_decays: Sequence[float],
    val_fraction: float,
    seed: int,
    device: torch.device,
) -> pd.DataFrame:
    """AUROC and FPR@95 of every score (ood_detection module) per site and OOD dataset."""
    rows = []
    for site in sites.sites:
        train = load_site(sites.activation_dir(train_dataset), site, max_train, seed)
        test = load_site(sites.activation_dir(id_dataset), site)
        oods = {d: load_site(sites.activation_dir(d), site) for d in ood_datasets}
        classes = sorted(set(train.labels))
        y = class_ids(train.labels, classes)
        scores: dict[tuple[str, str], dict[str, np.ndarray]] = {}

        raw_train = train.raw
        probe = fit_probe(
            raw_train, y, len(classes), weight_decays, val_fraction, seed, device=device
        )
        mahalanobis = MahalanobisScore(raw_train, y, len(classes))
        knn = KNNScore(raw_train, knn_k, device=device)
        for name, data in [(id_dataset, test), *oods.items()]:
            x = data.raw
            per = head_scores(probe, x)
            per["mahalanobis"] = mahalanobis(x)
            per["knn"] = knn(x)
            for score, values in per.items():
                scores.setdefault((RAW, score), {})[name] = values

        for sae_name, sae in sites.load_saes(site, device).items():
            codes_train = sae_codes(sae, train)
            knn_codes = KNNScore(codes_train, knn_k, device=device)
            profile = ProfileScore(codes_train, y, len(classes))
            for name, data in [(id_dataset, test), *oods.items()]:
                codes = sae_codes(sae, data)
                per = {
                    "recon_error": reconstruction_error(sae, data),
                    "activation_mass": -codes.sum(axis=1),
                    "knn": knn_codes(codes),
                    "profile": profile(codes),
                }
                for score, values in per.items():
                    scores.setdefault((sae_name, score), {})[name] = values

        for (features, score), by_dataset in scores.items():
            id_scores = by_dataset[id_dataset]
            for ood in ood_datasets:
                rows.append(
                    {
                        "model": sites.model,
                        "site": site,
                        "layer": site_layer(site),
                        "features": features,
                        "score": score,
                        "id_dataset": id_dataset,
                        "ood_dataset": ood,
                        "auroc": auroc(id_scores, by_dataset[ood]),
                        "fpr95": fpr_at_95_tpr(id_scores, by_dataset[ood]),
                        "n_id": len(id_scores),
                        "n_ood": len(by_dataset[ood]),
                    }
                )
    return pd.DataFrame(rows)
