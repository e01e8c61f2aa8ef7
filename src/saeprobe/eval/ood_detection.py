"""Task `ood_detection`: do SAE codes support out-of-distribution detection?

Every score is "higher = more out-of-distribution", fixed by its definition (never by the data).
The four standard scores run on raw activations and on SAE codes alike (like for like):
- `msp`: minus the maximum softmax probability of a linear head trained on the in-distribution
  training features; `energy`: minus logsumexp of the head's logits;
- `mahalanobis`: the minimum over classes of the Mahalanobis distance to the class mean
  under the shared (tied) covariance of the training features;
- `knn`: the distance of the L2-normalised feature to its k-th nearest neighbour among the
  normalised training features (Sun et al. 2022); the bank is all the training images used
  (`max_train_images`) or a seeded subset of `knn_bank` of them.
Scores only an SAE has:
- SAE `recon_error`: relative squared reconstruction error ||x - x_hat||^2 / ||x||^2;
- SAE `activation_mass`: minus the sum of the image's SAE codes (in-distribution inputs are
  expected to excite the learned latents more);
- SAE `profile`: minus the highest cosine similarity between the image's code vector and the
  class-conditional mean code vectors ("latent profiles") of the training set.
- SAE `factor_silence` (where `factors` name image attributes, e.g. shape, colour and
  background): "no latent of a known factor fires". A latent belongs to factor f when its mean
  code over the training images is highest at one value v of f and v holds at least half of its
  mean code summed over f's values (`FACTOR_SELECTIVITY`); its scale is that mean code at v. An
  image's evidence for f is its largest code / scale over f's latents, and its score is minus
  its weakest factor's evidence: an unseen colour silences the colour latents, a new shape the
  shape latents, while a known image has some latent of every factor firing. An SAE in which
  some factor has no latent of its own gets no such score (logged).
Per latent (`latent_contributions`, for the latent atlas): `contribution`, the latent's part of
the shift of the mean `activation_mass` score from the in-distribution set to the measured OOD
set, i.e. its mean code on ID minus on OOD images (the latents' parts sum to the shift; > 0:
the latent fires less on OOD images and so raises their score).
AUROC (scikit-learn) takes OOD as the positive class. FPR@95TPR is the fraction of OOD images
accepted at the threshold that accepts 95% of in-distribution images. The `oracle` row of each
OOD set is a supervised upper reference: a linear probe told ID from that set on raw
activations, AUROC cross-validated over two folds. A low oracle means the backbone does not
separate the set (no score can); a high oracle with a low score means the score is at fault.
OOD groups (`ood_groups`: near, far or legacy per set, as OpenOOD v1.5 splits ImageNet's sets)
are reported apart, never averaged together: each row carries its set's `ood_group`, and each
group gets rows `<group> (mean)` (the mean AUROC and FPR@95 over its sets).

Evidence (claim `ood_detection`, per site): the pre-registered `primary_score` on the primary
SAE's codes, ID vs the measured near-OOD set: `auroc` (bootstrap CI, resampling ID and OOD
images separately) and `auroc_sae_minus_raw` (the same score on raw activations, paired
bootstrap over the same images); positive control: `auroc` of the same score on the far-OOD
set (the detector must work where OOD is obvious); negative control: `auroc` with a fresh
in-distribution sample taken for OOD (it must not). The controls test the detector, so their
`raw_auroc` is shown, not judged; `oracle_auroc` is shown with each case, not judged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.linalg import lapack

from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows
from saeprobe.eval.features import (
    RAW,
    ModelSites,
    SiteData,
    class_ids,
    load_site,
    reconstruction_error,
    sae_codes,
    site_layer,
)
from saeprobe.eval.probes import NO_FIT, LinearProbe, ProbeFit, fit_probe
from saeprobe.sae.models import SAE
from saeprobe.stats import ALPHA, Estimate, auroc_from_labels
from saeprobe.stats import auroc as rank_auroc

log = logging.getLogger(__name__)


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC with OOD as positive (`saeprobe.stats.auroc`); scores: higher = more OOD (NaN
    when a score is missing)."""
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
        return float("nan")
    return rank_auroc(np.asarray(id_scores), np.asarray(ood_scores))


def fpr_at_95_tpr(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Fraction of OOD images with score <= the 95th percentile of in-distribution scores."""
    threshold = np.quantile(id_scores, 0.95, method="higher")
    return float(np.mean(ood_scores <= threshold))


def _normalise(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


class KNNScore:
    """k-th nearest-neighbour distance of normalised features to a normalised bank.

    The bank (n, d) is kept as given (float32, no normalised copy) with its inverse row norms;
    cosines are the dot products scaled by them."""

    def __init__(
        self, bank: np.ndarray, k: int, chunk: int = 4096, device: torch.device | str = "cpu"
    ) -> None:
        self.bank = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32)).to(device)
        norms = torch.zeros(len(self.bank), dtype=torch.float32, device=self.bank.device)
        for start in range(0, len(self.bank), chunk):
            norms[start : start + chunk] = self.bank[start : start + chunk].norm(dim=1)
        self.inverse_norms = 1 / norms.clamp_min(1e-12)
        self.k = min(k, len(bank))
        self.chunk = chunk

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: (n, d) -> (n,) distance to the k-th nearest bank row."""
        out = []
        for start in range(0, len(x), self.chunk):
            q = _normalise(x[start : start + self.chunk]).to(self.bank.device)
            sims = (q @ self.bank.T) * self.inverse_norms
            kth = sims.topk(self.k, dim=1).values[:, -1]
            out.append(torch.sqrt((2 - 2 * kth).clamp_min(0)).cpu().numpy())
        return np.concatenate(out)


def _float64_rows(x: np.ndarray, start: int, chunk: int) -> torch.Tensor:
    """Rows start..start+chunk of x (n, d) as a float64 tensor (a torch copy: never a view of x,
    which the callers may then modify)."""
    return torch.from_numpy(np.asarray(x[start : start + chunk])).to(torch.float64, copy=True)


def _class_means(
    x: np.ndarray, y: torch.Tensor, n_classes: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """((n_classes, d) float64 class means, (n_classes,) counts) of x (n, d), over row chunks."""
    means = torch.zeros(n_classes, x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), chunk):
        xt = _float64_rows(x, start, chunk)
        means.index_add_(0, y[start : start + chunk], xt)
    counts = torch.bincount(y, minlength=n_classes)
    return means / counts.clamp_min(1).unsqueeze(1), counts


def _tied_covariance(
    x: np.ndarray, y: torch.Tensor, means: torch.Tensor, ridge: float, chunk: int
) -> np.ndarray:
    """(d, d) float64 within-class covariance of x (n, d) around `means`, ridge added to the
    diagonal (a fraction of its mean), summed over row chunks."""
    d = x.shape[1]
    cov = torch.zeros(d, d, dtype=torch.float64)
    for start in range(0, len(x), chunk):
        xt = _float64_rows(x, start, chunk)
        xt -= means[y[start : start + chunk]]
        cov.addmm_(xt.T, xt)
    cov /= max(len(x) - 1, 1)
    cov.diagonal().add_(ridge * cov.diagonal().mean().clamp_min(1e-12))
    return cov.numpy()


def invert_spd_in_place(a: np.ndarray, block: int = 2048) -> bool:
    """Invert the symmetric positive-definite a (d, d) float64 C-contiguous in its own memory
    (LAPACK potrf, potri: a Cholesky inverse at a fraction of an eigendecomposition's cost, and
    no second d x d matrix). False, with a overwritten, when a is not numerically positive
    definite."""
    column_major = a.T  # the same memory; a is symmetric, so this is a as LAPACK reads it
    factor, info = lapack.dpotrf(column_major, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        return False
    inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0 or not np.shares_memory(inverse, a):
        raise RuntimeError("LAPACK potri did not invert in place")  # pragma: no cover
    # the inverse is in column-major upper = row-major lower triangle; mirror it, block-wise
    d = len(a)
    for start in range(0, d, block):
        stop = min(start + block, d)
        a[start:stop, stop:] = a[stop:, start:stop].T
        diagonal = a[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        diagonal[upper] = diagonal.T[upper]
    return True


class MahalanobisScore:
    """Minimum class-conditional Mahalanobis distance under a tied covariance (Lee et al. 2018).

    Memory: one d x d float64 matrix (16,384 SAE latents: 2.1 GB), the covariance inverted in
    place; the inputs are read in float64 chunks of `chunk` rows."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, n_classes: int, ridge: float = 1e-6, chunk: int = 2048
    ) -> None:
        """x: (n, d), y: (n,) class ids; sums in float64 over `chunk` rows at a time."""
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.means, counts = _class_means(x, yt, n_classes, chunk)
        self.present = counts > 0
        cov = _tied_covariance(x, yt, self.means, ridge, chunk)
        # the ridge makes cov positive definite; if it still is not numerically, the
        # pseudo-inverse of a recomputed covariance
        if invert_spd_in_place(cov):
            self.precision = torch.from_numpy(cov)
        else:
            del cov
            cov = torch.from_numpy(_tied_covariance(x, yt, self.means, ridge, chunk))
            self.precision = torch.linalg.pinv(cov, hermitian=True)

    def __call__(self, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """x: (n, d) -> (n,) squared distance to the closest class mean."""
        means = self.means[self.present]
        mean_term = ((means @ self.precision) * means).sum(dim=1)
        out = []
        for start in range(0, len(x), chunk):
            xt = _float64_rows(x, start, chunk)
            xp = xt @ self.precision
            dist = (xp * xt).sum(dim=1, keepdim=True) - 2 * xp @ means.T + mean_term
            out.append(dist.min(dim=1).values.numpy())
        return np.concatenate(out)


class ProfileScore:
    """Minus the best cosine between a code vector and the class-mean code vectors."""

    def __init__(self, codes: np.ndarray, y: np.ndarray, n_classes: int) -> None:
        ct = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        profiles = torch.zeros(n_classes, ct.shape[1])
        profiles.index_add_(0, yt, ct)
        present = torch.bincount(yt, minlength=n_classes) > 0
        self.profiles = _normalise(profiles[present].numpy())

    def __call__(self, codes: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """codes: (n, width) -> (n,)."""
        return np.concatenate(
            [
                -(_normalise(codes[a : a + chunk]) @ self.profiles.T).max(dim=1).values.numpy()
                for a in range(0, len(codes), chunk)
            ]
        )


FACTOR_SELECTIVITY = 0.5


class FactorSilenceScore:
    """Minus the weakest factor's evidence (module docstring, `factor_silence`)."""

    def __init__(
        self, codes: np.ndarray, factors: Mapping[str, np.ndarray], chunk: int = 8192
    ) -> None:
        """codes: (n, width) training codes; factors: name -> (n,) value of each image; sums
        in float64 over `chunk` rows at a time."""
        self.members: dict[str, torch.Tensor] = {}
        self.scales: dict[str, torch.Tensor] = {}
        for name, values in factors.items():
            levels, ids = np.unique(np.asarray(values).astype(str), return_inverse=True)
            yt = torch.from_numpy(ids.astype(np.int64))
            sums = torch.zeros(len(levels), codes.shape[1], dtype=torch.float64)
            for start in range(0, len(codes), chunk):
                part = np.asarray(codes[start : start + chunk], dtype=np.float64)
                sums.index_add_(0, yt[start : start + chunk], torch.from_numpy(part))
            means = sums / torch.bincount(yt, minlength=len(levels)).clamp_min(1).unsqueeze(1)
            top, total = means.max(dim=0).values, means.sum(dim=0)
            member = (top > 0) & (top >= FACTOR_SELECTIVITY * total)
            self.members[name] = torch.nonzero(member).squeeze(1)
            self.scales[name] = top[member].float()

    @property
    def latents(self) -> dict[str, int]:
        """{factor: number of its latents}."""
        return {name: len(m) for name, m in self.members.items()}

    @property
    def complete(self) -> bool:
        """Whether every factor has a latent of its own (else the score cannot be taken)."""
        return bool(self.members) and min(self.latents.values()) > 0

    def __call__(self, codes: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """codes: (n, width) -> (n,); NaN when some factor has no latent (it cannot say
        whether that factor is seen)."""
        if not self.complete:
            return np.full(len(codes), np.nan)
        out = []
        for start in range(0, len(codes), chunk):
            ct = torch.from_numpy(np.ascontiguousarray(codes[start : start + chunk], np.float32))
            evidence = torch.stack(
                [(ct[:, self.members[f]] / self.scales[f]).max(dim=1).values for f in self.members],
                dim=1,
            )
            out.append((-evidence.min(dim=1).values).numpy())
        return np.concatenate(out)


def image_factors(data: SiteData, factors: Sequence[str]) -> dict[str, np.ndarray]:
    """{factor: (n_images,) value} of the images' attribute columns named in `factors`."""
    missing = [f for f in factors if f not in data.images]
    if missing:
        raise ValueError(
            f"config key 'vision.ood_detection.factors': {missing} are not columns of the "
            f"training images' table (columns: {sorted(data.images.columns)})"
        )
    return {f: data.images[f].astype(str).to_numpy() for f in factors}


def head_scores(probe: LinearProbe, x: np.ndarray) -> dict[str, np.ndarray]:
    """MSP and energy OOD scores of a trained linear head: {"msp": (n,), "energy": (n,)}."""
    logits = probe.logits(x)
    msp = torch.softmax(logits, dim=1).max(dim=1).values
    energy = torch.logsumexp(logits, dim=1)
    return {"msp": (-msp).numpy(), "energy": (-energy).numpy()}


# -- the task on a model's sites --

FEATURE_SCORES = ("msp", "energy", "mahalanobis", "knn")
HEAD_SCORES = ("msp", "energy")  # the scores of the linear head
SAE_SCORES = ("recon_error", "activation_mass", "profile", "factor_silence")
ORACLE = "oracle"
Scores = dict[tuple[str, str], dict[str, np.ndarray]]


class FeatureScorers:
    """The FEATURE_SCORES fitted on x_train (n, d), y (n,) class ids: the linear head (msp,
    energy), the Mahalanobis score and the kNN bank; the same code for raw activations and SAE
    codes. They keep no reference to x_train unless the kNN bank is all of it, so the caller
    can free the training features before the evaluation sets are scored.

    probe_options: fit_probe's max_iter, grad_tol, std_floor; knn_bank: the kNN bank's size (a
    seeded subset of x_train; None: all of it)."""

    def __init__(
        self,
        x_train: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        knn_k: int,
        weight_decays: Sequence[float],
        val_fraction: float,
        seed: int,
        device: torch.device | str = "cpu",
        probe_options: Mapping[str, Any] | None = None,
        knn_bank: int | None = None,
    ) -> None:
        self.probe = fit_probe(
            x_train, y, n_classes, weight_decays, val_fraction, seed, device=device,
            **(probe_options or {}),
        )  # fmt: skip
        self.mahalanobis = MahalanobisScore(x_train, y, n_classes)
        rows = knn_bank_rows(len(x_train), knn_bank, seed)
        bank = x_train if len(rows) == len(x_train) else x_train[rows]  # no copy of all rows
        self.knn = KNNScore(bank, knn_k, device=device)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """x: (m, d) -> {score: (m,)}."""
        per = head_scores(self.probe, x)
        per["mahalanobis"] = self.mahalanobis(x)
        per["knn"] = self.knn(x)
        return per


def feature_scores(
    scorers: FeatureScorers,
    evals: Mapping[str, np.ndarray],
    fits: dict[str, ProbeFit] | None = None,
    extra: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """The FEATURE_SCORES of each eval set (name -> (m, d)): {score: {name: (m,)}}; fits, when
    given, gets the head's final fit under each score that uses it (msp, energy).

    Each eval set is read from `evals` once (a lazy mapping can encode one set at a time);
    `extra` adds more scores {score: (m,)} of the same (m, d) array."""
    if fits is not None:
        fits.update({score: scorers.probe.fit for score in HEAD_SCORES})
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in evals:
        x = evals[name]
        per = scorers(x)
        if extra is not None:
            per.update(extra(x))
        del x
        for score, values in per.items():
            out.setdefault(score, {})[name] = values
    return out


def knn_bank_rows(n: int, size: int | None, seed: int) -> np.ndarray:
    """(m,) sorted rows of the n training images that form the kNN bank: a seeded subset of
    `size` of them, all when size is None or at least n."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([int(seed), 7411]).choice(n, size, replace=False))


def group_means(rows: Sequence[dict], groups: Mapping[str, str]) -> list[dict]:
    """Per (site, features, score) and OOD group, one row `<group> (mean)`: the mean AUROC and
    FPR@95 over the group's sets (rows: score_rows' rows; groups: OOD set -> group)."""
    if not groups:
        return []
    table = pd.DataFrame(rows)
    table = table[table["ood_dataset"].isin(list(groups))].copy()
    if table.empty:
        return []
    table["ood_group"] = table["ood_dataset"].map(groups)
    keys = ["model", "site", "layer", "id_dataset", "features", "score", "ood_group"]
    means = table.groupby(keys, sort=False).agg(
        auroc=("auroc", "mean"), fpr95=("fpr95", "mean"), n_id=("n_id", "first"),
        n_ood=("n_ood", "sum"), n_sets=("ood_dataset", "nunique"),
    ).reset_index()  # fmt: skip
    means["ood_dataset"] = means["ood_group"] + " (mean)"
    return means.to_dict("records")


def oracle_scores(
    x_id: np.ndarray, x_ood: np.ndarray, seed: int, weight_decay: float = 1e-3, folds: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Supervised reference: the margin of a linear probe (fixed penalty) trained to tell
    x_ood (m, d) from x_id (n, d), each image scored by the probe fitted on the other folds
    (stratified): ((n,), (m,)), higher = more OOD."""
    x = np.concatenate([x_id, x_ood], dtype=np.float32)
    is_ood = np.r_[np.zeros(len(x_id), np.int64), np.ones(len(x_ood), np.int64)]
    if min(len(x_id), len(x_ood)) < folds:
        return np.full(len(x_id), np.nan), np.full(len(x_ood), np.nan)
    rng = np.random.default_rng([seed, 31])
    fold = np.empty(len(x), np.int64)
    for label in (0, 1):
        where = np.flatnonzero(is_ood == label)
        fold[rng.permutation(where)] = np.arange(len(where)) % folds
    margin = np.empty(len(x), np.float32)
    for f in range(folds):
        train, test = fold != f, fold == f
        probe = fit_probe(x[train], is_ood[train], 2, [weight_decay], 0.0, seed)
        logits = probe.logits(x[test])
        margin[test] = (logits[:, 1] - logits[:, 0]).numpy()
    return margin[: len(x_id)], margin[len(x_id) :]


class EncodedSets(Mapping):
    """Dataset -> (n_images, width) SAE codes of its SiteData, encoded on every access (none
    kept, so a pass over the sets holds one set's codes at a time)."""

    def __init__(self, sae: SAE, sets: Mapping[str, SiteData]) -> None:
        self.sae, self.sets = sae, sets

    def __getitem__(self, name: str) -> np.ndarray:
        return sae_codes(self.sae, self.sets[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.sets)

    def __len__(self) -> int:
        return len(self.sets)


def site_scores(
    sites: ModelSites,
    site: str,
    train: SiteData,
    evals: dict[str, SiteData],
    fit: dict,
    fits: dict[tuple[str, str], ProbeFit] | None = None,
    factors: Sequence[str] = (),
) -> Scores:
    """{(features, score): {dataset: (n,)}} of one site: raw and every SAE's codes; `fits`,
    when given, gets the linear head's final fit under (features, score) of the head's scores;
    factors: the image attributes of the `factor_silence` score (none: no such score)."""
    classes = sorted(set(train.labels))
    y = class_ids(train.labels, classes)
    attributes = image_factors(train, factors)
    scores: Scores = {}
    raw = {d: data.raw for d, data in evals.items()}
    head: dict[str, ProbeFit] = {}
    scorers = FeatureScorers(train.raw, y, len(classes), **fit)
    for score, by in feature_scores(scorers, raw, fits=head).items():
        scores[(RAW, score)] = by
    if fits is not None:
        fits.update({(RAW, score): f for score, f in head.items()})
    for sae_name in sites.sae_names:
        sae = sites.load_sae(site, sae_name, fit["device"])
        codes_train = sae_codes(sae, train)
        profile = ProfileScore(codes_train, y, len(classes))
        silence = FactorSilenceScore(codes_train, attributes) if attributes else None
        if silence is not None and not silence.complete:
            log.warning(
                "%s %s: no factor_silence score, a factor has no latent of its own %s",
                site, sae_name, silence.latents,
            )  # fmt: skip
            silence = None
        scorers = FeatureScorers(codes_train, y, len(classes), **fit)
        del codes_train  # the evaluation sets are encoded one at a time without it

        def sae_only(
            c: np.ndarray,
            profile: ProfileScore = profile,
            silence: FactorSilenceScore | None = silence,
        ) -> dict[str, np.ndarray]:
            out = {"activation_mass": -c.sum(axis=1), "profile": profile(c)}
            if silence is not None:
                out["factor_silence"] = silence(c)
            return out

        codes = EncodedSets(sae, evals)
        per = feature_scores(scorers, codes, fits=head, extra=sae_only)
        del scorers
        if fits is not None:
            fits.update({(sae_name, score): f for score, f in head.items()})
        per["recon_error"] = {d: reconstruction_error(sae, x) for d, x in evals.items()}
        per = {s: per[s] for s in (*FEATURE_SCORES, *SAE_SCORES) if s in per}
        for score, by in per.items():
            scores[(sae_name, score)] = by
    return scores


def score_rows(
    model: str,
    site: str,
    id_dataset: str,
    others: Sequence[str],
    scores: Scores,
    oracles: dict[str, tuple[np.ndarray, np.ndarray]],
    fits: Mapping[tuple[str, str], ProbeFit] | None = None,
) -> list[dict]:
    """Table rows: AUROC and FPR@95 of every (features, score) and set, then the oracles;
    the probe_* columns hold the linear head's final fit (`fits`; empty for other scores)."""
    base = {"model": model, "site": site, "layer": site_layer(site), "id_dataset": id_dataset}
    rows = []
    no_fit = {column: float("nan") for column in NO_FIT.columns()}
    for (features, score), by_dataset in scores.items():
        fit = (fits or {}).get((features, score))
        id_scores = by_dataset[id_dataset]
        for ood in others:
            ood_scores = by_dataset[ood]
            rows.append(
                {
                    **base,
                    "features": features,
                    "score": score,
                    "ood_dataset": ood,
                    "auroc": auroc(id_scores, ood_scores),
                    "fpr95": fpr_at_95_tpr(id_scores, ood_scores),
                    "n_id": len(id_scores),
                    "n_ood": len(ood_scores),
                    **(fit.columns() if fit is not None else no_fit),
                }
            )
    for ood, (id_scores, ood_scores) in oracles.items():
        rows.append(
            {
                **base,
                "features": RAW,
                "score": ORACLE,
                "ood_dataset": ood,
                "auroc": auroc(id_scores, ood_scores),
                "fpr95": fpr_at_95_tpr(id_scores, ood_scores),
                "n_id": len(id_scores),
                "n_ood": len(ood_scores),
                **no_fit,
            }
        )
    return rows


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
    controls: Sequence[str] = (),
    probe_options: Mapping[str, Any] | None = None,
    knn_bank: int | None = None,
    ood_groups: Mapping[str, str] | None = None,
    factors: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, Scores], dict[str, dict[str, float]]]:
    """Every score per site, features and eval set (ood_datasets and the `controls`, e.g. a
    far-OOD set and a fresh ID sample, all against id_dataset); ood_groups: OOD set -> near,
    far or legacy; factors: image attributes of the `factor_silence` score (module docstring).

    Returns the table (AUROC, FPR@95 and the oracle rows), per site the scores
    {(features, score): {dataset: (n,)}} and per site the oracle AUROC {dataset: auroc}.
    """
    others = list(dict.fromkeys([*ood_datasets, *controls]))
    fit = {
        "knn_k": knn_k,
        "weight_decays": weight_decays,
        "val_fraction": val_fraction,
        "seed": seed,
        "device": device,
        "probe_options": probe_options,
        "knn_bank": knn_bank,
    }
    groups = dict(ood_groups or {})
    rows: list[dict] = []
    all_scores: dict[str, Scores] = {}
    all_oracles: dict[str, dict[str, float]] = {}
    for site in sites.sites:
        train = load_site(sites.activation_dir(train_dataset), site, max_train, seed)
        evals = {d: load_site(sites.activation_dir(d), site) for d in [id_dataset, *others]}
        fits: dict[tuple[str, str], ProbeFit] = {}
        scores = site_scores(sites, site, train, evals, fit, fits, factors)
        raw_id = evals[id_dataset].raw
        oracles = {d: oracle_scores(raw_id, evals[d].raw, seed) for d in others}
        site_rows = score_rows(sites.model, site, id_dataset, others, scores, oracles, fits)
        for row in site_rows:
            row["ood_group"] = groups.get(row["ood_dataset"], "")
        rows += site_rows + group_means(site_rows, groups)
        all_scores[site] = scores
        all_oracles[site] = {d: auroc(*pair) for d, pair in oracles.items()}
    return pd.DataFrame(rows), all_scores, all_oracles


def bootstrap_aurocs(
    scores: Sequence[np.ndarray], is_ood: np.ndarray, seed: int, n_boot: int
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC of each score (n,) and its stratified bootstrap draws: ((k,), (n_boot, k)).

    Every draw resamples the ID and the OOD images separately (group sizes fixed), the same
    draw for every score (paired). A draw is a vector of multiplicities, so one sort per score
    serves all draws; ties count half.
    """
    is_ood = np.asarray(is_ood, dtype=bool)
    rng = np.random.default_rng([int(seed), 7919])
    weights = np.zeros((n_boot + 1, len(is_ood)))
    weights[0] = 1.0  # the observed sample
    for group in (~is_ood, is_ood):
        idx = np.flatnonzero(group)
        draws = rng.integers(0, len(idx), (n_boot, len(idx)))
        draws += np.arange(n_boot)[:, None] * len(idx)
        counts = np.bincount(draws.ravel(), minlength=n_boot * len(idx))
        weights[1:, idx] = counts.reshape(n_boot, len(idx))
    w_id, w_ood = weights * ~is_ood, weights * is_ood
    out = np.empty((n_boot + 1, len(scores)))
    for j, s in enumerate(scores):
        order = np.argsort(s, kind="stable")
        sorted_s = s[order]
        start = np.searchsorted(sorted_s, sorted_s, side="left")
        end = np.searchsorted(sorted_s, sorted_s, side="right")
        cum = np.concatenate([np.zeros((n_boot + 1, 1)), np.cumsum(w_id[:, order], axis=1)], 1)
        below, at = cum[:, start], cum[:, end] - cum[:, start]
        wins = (w_ood[:, order] * (below + 0.5 * at)).sum(axis=1)
        out[:, j] = wins / (w_id.sum(axis=1) * w_ood.sum(axis=1))
    return out[0], out[1:]


def auroc_estimates(
    sae_scores: np.ndarray, raw_scores: np.ndarray, is_ood: np.ndarray, seed: int, n_boot: int
) -> dict[str, Estimate]:
    """`auroc` of sae_scores (n,) and `auroc_sae_minus_raw` against raw_scores (n,) on the same
    images, with percentile bootstrap CIs that resample ID and OOD images separately."""
    value, draws = bootstrap_aurocs([sae_scores, raw_scores], is_ood, seed, n_boot)
    lo, hi = ALPHA / 2, 1 - ALPHA / 2
    diff = draws[:, 0] - draws[:, 1]
    return {
        "auroc": Estimate(value[0], *np.quantile(draws[:, 0], [lo, hi]).tolist()),
        "auroc_sae_minus_raw": Estimate(value[0] - value[1], *np.quantile(diff, [lo, hi]).tolist()),
    }


def ood_evidence(
    scores: Scores,
    oracles: dict[str, float],
    site: str,
    id_dataset: str,
    measured_dataset: str,
    far_dataset: str | None,
    fresh_id_dataset: str | None,
    primary_sae: str,
    primary_score: str,
    sensitivity_saes: Sequence[str],
    seed: int,
    n_boot: int = 1000,
) -> list[dict]:
    """Evidence rows of claim `ood_detection` for one site (see the module docstring).

    scores: {(features, score): {dataset: (n,)}} with features RAW or an SAE name.
    A control set to None is not run (the verdict is then inconclusive).
    """
    cases = [
        (MEASURED, measured_dataset, primary_sae),
        (POSITIVE, far_dataset, primary_sae),
        (NEGATIVE, fresh_id_dataset, primary_sae),
        *[(f"{SENSITIVITY}{s}", measured_dataset, s) for s in sensitivity_saes],
    ]
    rows = []
    raw = scores[(RAW, primary_score)]
    for case, dataset, sae in cases:
        if dataset is None or (sae, primary_score) not in scores:
            continue
        codes = scores[(sae, primary_score)]
        is_ood = np.r_[np.zeros(len(codes[id_dataset]), bool), np.ones(len(codes[dataset]), bool)]
        estimates = auroc_estimates(
            np.r_[codes[id_dataset], codes[dataset]],
            np.r_[raw[id_dataset], raw[dataset]],
            is_ood,
            seed,
            n_boot,
        )
        raw_auroc = auroc_from_labels(is_ood, np.r_[raw[id_dataset], raw[dataset]])
        if case in (POSITIVE, NEGATIVE):
            # a control checks the detector, not the comparison with raw: shown, not judged
            del estimates["auroc_sae_minus_raw"]
            estimates["raw_auroc"] = Estimate(raw_auroc)
        estimates["oracle_auroc"] = Estimate(oracles.get(dataset, float("nan")))
        note = (
            f"{primary_score} on {sae} codes, {id_dataset} vs {dataset}; raw {primary_score} "
            f"AUROC {raw_auroc:.3f}; supervised oracle (raw) AUROC "
            f"{oracles.get(dataset, float('nan')):.3f}"
        )
        rows += evidence_rows("ood_detection", site, case, estimates, note)
    return rows


def site_evidence(
    scores: Mapping[str, Scores],
    oracles: Mapping[str, dict[str, float]],
    id_dataset: str,
    measured_dataset: str,
    far_dataset: str | None,
    fresh_id_dataset: str | None,
    primary_sae: str,
    primary_score: str,
    sae_names: Sequence[str],
    seed: int,
) -> list[dict]:
    """Evidence rows of claim `ood_detection` for every site of `scores` (site -> Scores, as
    `ood_detection` returns them, with oracles site -> {dataset: auroc}): `ood_evidence` per
    site, the SAEs other than the primary as sensitivity rows."""
    others = [name for name in sae_names if name != primary_sae]
    rows = []
    for site in scores:
        rows += ood_evidence(
            scores[site], oracles[site], site, id_dataset, measured_dataset, far_dataset,
            fresh_id_dataset, primary_sae, primary_score, others, seed=seed,
        )  # fmt: skip
    return rows


def latent_contributions(
    sites: ModelSites, id_dataset: str, ood_dataset: str, device: torch.device | str = "cpu"
) -> pd.DataFrame:
    """Each SAE latent's `contribution` (module docstring) at every site: rows of sae, model,
    site, features, latent, id_mean, ood_mean, contribution."""
    frames = []
    for site in sites.sites:
        data_id = load_site(sites.activation_dir(id_dataset), site)
        data_ood = load_site(sites.activation_dir(ood_dataset), site)
        for name, sae in sites.load_saes(site, device).items():
            id_mean = sae_codes(sae, data_id).mean(axis=0, dtype=np.float64)
            ood_mean = sae_codes(sae, data_ood).mean(axis=0, dtype=np.float64)
            frames.append(
                pd.DataFrame(
                    {
                        "sae": sites.sae_id(site, name),
                        "model": sites.model,
                        "site": site,
                        "features": name,
                        "latent": np.arange(len(id_mean)),
                        "id_mean": id_mean,
                        "ood_mean": ood_mean,
                        "contribution": id_mean - ood_mean,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
