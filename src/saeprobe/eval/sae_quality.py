"""One row of `sae_quality.csv` per SAE: reconstruction metrics and downstream accuracy."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats

from saeprobe.activations import ActivationStore
from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows
from saeprobe.io import atomic_write_csv
from saeprobe.sae import (
    SAEConfig,
    TrainConfig,
    downstream_recovered,
    load_sae,
    reconstruct,
    train_sweep,
)
from saeprobe.sae.config import K_ARCHITECTURES
from saeprobe.sae.io import METRICS, read_json
from saeprobe.sae.synthetic import planted_sparse
from saeprobe.stats import Estimate, bootstrap, bootstrap_difference

log = logging.getLogger(__name__)

COLUMNS = [
    "sae",
    "model",
    "layer",
    "site",
    "arch",
    "width",
    "k",
    "l1",
    "l0",
    "nmse",
    "explained_variance",
    "cos_sim",
    "dead_frac",
    "dense_frac",
    "downstream_recovered",
    "acc_clean",
    "acc_sae",
    "acc_ablated",
    "n_inputs",
]


def parse_site(site: str) -> tuple[int | None, str | None]:
    """`L{layer}_{tokens}` -> (layer, tokens); `pooled` -> (None, None)."""
    if site == "pooled":
        return None, None
    match = re.fullmatch(r"L(\d+)_([A-Za-z0-9-]+)", site)
    if match is None:
        raise ValueError(f"site {site!r}: expected L<layer>_<tokens> or pooled")
    return int(match.group(1)), match.group(2)


def downstream_accuracies(
    saes: Mapping[str, Any],
    model_spec: Mapping,
    dataset_spec: Mapping,
    site: str,
    ablation_mean: np.ndarray,
    class_names: Mapping[str, str],
    device: torch.device,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Zero-shot accuracy clean, with each SAE spliced in at `site`, and with the site ablated.

    saes: name -> SAE; ablation_mean: (d,) mean activation of the site on the SAEs' training
    data; class_names maps each dataset label to the word put into the prompt. Returns
    {"clean": acc, "ablated": acc, <sae name>: acc, ...}; one pass over the images.
    """
    from saeprobe.backbones.openclip import OpenClipBackbone, load_open_clip_model
    from saeprobe.data import load_dataset
    from saeprobe.eval.downstream import text_classifier, zero_shot_accuracies

    layer, tokens = parse_site(site)
    model, tokenizer = load_open_clip_model(model_spec, device)
    backbone = OpenClipBackbone(model, model_spec, device, precision="fp32")
    dataset = load_dataset(dataset_spec, backbone.preprocess_params, seed=seed)
    labels = dataset.labels()
    classes = sorted(set(labels))
    classifier = text_classifier(model, tokenizer, [class_names.get(c, c) for c in classes])
    index = {c: i for i, c in enumerate(classes)}
    targets = np.array([index[label] for label in labels], dtype=np.int64)
    mean = torch.as_tensor(ablation_mean, dtype=torch.float32, device=device)

    def spliced(sae: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: reconstruct(sae, x.float()).to(x.dtype)

    replacements: dict[str, Callable | None] = {
        "clean": None,
        "ablated": lambda x: mean.to(x.dtype).expand_as(x),
    }
    replacements.update({name: spliced(sae.to(device)) for name, sae in saes.items()})
    return zero_shot_accuracies(
        backbone, dataset, classifier, targets, layer, tokens, replacements, batch_size=batch_size
    )


def site_quality(
    sae_dirs: Sequence[str | Path],
    model: str,
    site: str,
    train: str | Path | None,
    model_spec: Mapping,
    dataset_spec: Mapping | None,
    class_names: Mapping[str, str] | None,
    device: torch.device,
    batch_size: int = 256,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per SAE of one site of `model`, on held-out data.

    Reconstruction metrics are the held-out ones the trainer wrote to each `metrics.json`;
    train: the activation-store site directory of the training set (its mean is the ablation;
    needed only for downstream accuracy).
    Downstream accuracy is measured when `dataset_spec` and `class_names` are given, the model
    has a text tower and the site can be spliced back; otherwise those columns are NaN.
    """
    from saeprobe.eval.downstream import has_text_tower

    dirs = [Path(d) for d in sae_dirs]
    layer, tokens = parse_site(site)
    saes = {}
    for d in dirs:
        sae = load_sae(d, device)
        saes[sae.cfg.name] = sae
    nan = float("nan")
    accs: dict[str, float] = {"clean": nan, "ablated": nan}
    spliceable = tokens is None or tokens in ("cls", "patches", "all")
    downstream = dataset_spec is not None and class_names and train is not None
    if downstream and has_text_tower(model_spec) and spliceable:
        accs = downstream_accuracies(
            saes,
            model_spec,
            dataset_spec,
            site,
            ActivationStore(train).mean,
            class_names,
            device,
            batch_size,
            seed,
        )
    rows = []
    for d, (name, sae) in zip(dirs, saes.items(), strict=True):
        metrics = read_json(Path(d) / METRICS)
        cfg = sae.cfg
        arch = cfg.arch if cfg.arch != "matryoshka" else f"matryoshka-{cfg.matryoshka_base}"
        acc_sae = accs.get(name, nan)
        rows.append(
            {
                "sae": f"{model}/{site}/{name}",
                "model": model,
                "layer": "pooled" if layer is None else layer,
                "site": site,
                "arch": arch,
                "width": sae.width,
                "k": cfg.k if cfg.arch in ("topk", "batchtopk", "matryoshka") else None,
                "l1": cfg.l1 if cfg.arch == "relu" else None,
                "l0": metrics["l0"],
                "nmse": metrics["nmse"],
                "explained_variance": metrics["explained_variance"],
                "cos_sim": metrics["cos_sim"],
                "dead_frac": metrics["dead_frac"],
                "dense_frac": metrics["dense_frac"],
                "downstream_recovered": downstream_recovered(
                    accs["clean"], acc_sae, accs["ablated"]
                ),
                "acc_clean": accs["clean"],
                "acc_sae": acc_sae,
                "acc_ablated": accs["ablated"],
                "n_inputs": metrics["n_inputs"],
            }
        )
    return rows


def write_site_quality(
    sae_dirs: Sequence[str | Path],
    model: str,
    site: str,
    train_store: str | Path | None,
    out: str | Path,
    model_spec: Mapping,
    dataset_spec: Mapping,
    hierarchy: str | Path | None,
    downstream: bool,
    device: torch.device,
    batch_size: int,
    seed: int,
) -> pd.DataFrame:
    """`site_quality` of the SAEs of one site of `model`, written to the CSV `out`.

    train_store: the model's activation store on the SAE training set (its `site` directory's
    mean is the ablation). Downstream accuracy is measured only with `downstream`, a
    `train_store` and a `hierarchy` file (its node names are the zero-shot class names).
    """
    from saeprobe.hierarchy import read_hierarchy

    downstream = downstream and hierarchy is not None and train_store is not None
    rows = site_quality(
        sae_dirs,
        model,
        site,
        Path(train_store) / site if downstream else None,
        model_spec=model_spec,
        dataset_spec=dataset_spec if downstream else None,
        class_names=read_hierarchy(hierarchy).names if downstream else None,
        device=device,
        batch_size=batch_size,
        seed=seed,
    )
    for row in rows:
        log.info("quality: %s", json.dumps(row))
    table = pd.DataFrame(rows)
    atomic_write_csv(out, table)
    return table


# -- evidence for the claim "SAEs reconstruct faithfully" -------------------------------------

CLAIM = "reconstruction"
DENSE_THRESHOLD = 0.1  # a latent active on more than this fraction of inputs is dense
CONTROL_ROWS = 20_000  # training rows of each control (at least; see `control_rows`)
CONTROL_EVAL_ROWS = 10_000
TWIN_DRAWS = 3  # Gaussian twins per site: their spread is the training noise of a gain
PCA_FIT_ROWS = 100_000
PLANTED_NOISE = 0.05  # isotropic noise norm relative to the planted signal's rms norm


def store_sample(
    store: ActivationStore, n: int, seed: int, divisors: np.ndarray | None = None
) -> np.ndarray:
    """Up to `n` rows of `store` (all when it has fewer), float64 (rows, d), in store order;
    divisors: (len(store),) per-row divisors (modality normalisation) or None."""
    total = len(store)
    idx = np.arange(total)
    if total > n:
        idx = np.sort(np.random.default_rng([seed, 31]).choice(total, n, replace=False))
    x = np.concatenate(
        [
            np.asarray(store.shard(i)[sel - store._offsets[i]], dtype=np.float64)
            for i in range(store.num_shards)
            if (sel := idx[(idx >= store._offsets[i]) & (idx < store._offsets[i + 1])]).size
        ]
    )
    if divisors is not None:
        x /= np.asarray(divisors, dtype=np.float64)[idx, None]
    return x


@torch.no_grad()
def sae_errors(sae: Any, x: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-row squared reconstruction error (n,) and per-latent firing frequency (width,)
    of `sae` on raw activations x (n, d)."""
    device = sae.W_enc.device
    errs, counts = [], torch.zeros(sae.width, dtype=torch.float64)
    for start in range(0, len(x), batch):
        part = torch.as_tensor(x[start : start + batch], dtype=torch.float32, device=device)
        codes = sae.encode(part)
        x_hat = sae.decode(codes).double().cpu().numpy()
        errs.append(((x[start : start + batch] - x_hat) ** 2).sum(1))
        counts += (codes != 0).sum(0).to("cpu", torch.float64)
    return np.concatenate(errs), (counts / max(len(x), 1)).numpy()


@dataclass(frozen=True)
class PCA:
    """Principal axes of a fit set: mean (d,), axes (d, d) rows by decreasing variance."""

    mean: np.ndarray
    axes: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> PCA:
        """x: (rows, d); eigenvectors of the covariance (d x d, cheap for any row count)."""
        mean = x.mean(0)
        centred = x - mean
        values, vectors = np.linalg.eigh(centred.T @ centred)
        return cls(mean, vectors[:, np.argsort(values)[::-1]].T)

    def errors(self, x: np.ndarray, m: int) -> np.ndarray:
        """Per-row squared error (n,) of reconstructing x (n, d) from its top `m` axes."""
        basis = self.axes[: max(0, min(m, x.shape[1]))]
        centred = x - self.mean
        return ((centred - centred @ basis.T @ basis) ** 2).sum(1)


def gain_terms(sae: Any, pca: PCA, x_eval: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-row terms of the SAE's gain over PCA on x_eval (n, d): PCA's squared error with
    round(L0) components (n,), the SAE's (n,), the squared deviation from the mean (n,), and
    the latents' firing frequencies (width,)."""
    err, freq = sae_errors(sae, x_eval)
    err_pca = pca.errors(x_eval, max(1, round(float(freq.sum()))))
    dev = ((x_eval - x_eval.mean(0)) ** 2).sum(1)
    return err_pca, err, dev, freq


def _gain(err_pca: np.ndarray, err: np.ndarray, dev: np.ndarray) -> float:
    """NMSE of PCA minus NMSE of the SAE (fractions of the total variance)."""
    return float((err_pca.sum() - err.sum()) / dev.sum())


def _nmse(err: np.ndarray, dev: np.ndarray) -> float:
    return float(err.sum() / dev.sum())


@dataclass(frozen=True)
class Twins:
    """`gain_terms` of SAEs of one config trained on independent draws of a Gaussian twin. Their
    gains differ by training noise alone (data draw and initialisation), which no bootstrap over
    eval rows sees."""

    terms: tuple[tuple[np.ndarray, ...], ...]

    @property
    def gains(self) -> np.ndarray:
        """(draws,) each twin's gain over PCA."""
        return np.array([_gain(*t[:3]) for t in self.terms])

    def noise_halfwidth(self) -> float:
        """Half-width of a 95% t interval for one new training run's gain minus the twins' mean
        gain: t(0.975, draws - 1) * sd * sqrt(1 + 1 / draws); 0 with a single draw."""
        g = self.gains
        if len(g) < 2:
            return 0.0
        t = float(scipy_stats.t.ppf(0.975, len(g) - 1))
        return t * float(g.std(ddof=1)) * math.sqrt(1 + 1 / len(g))


def structure_gain(
    terms: tuple[np.ndarray, ...], twins: Twins, seed: int, noise: float
) -> Estimate:
    """The gain of `terms` over PCA minus the twins' mean gain. Its interval joins the bootstrap
    over eval rows (against the first twin) and the training noise `noise` (a half-width, e.g.
    `Twins.noise_halfwidth`) in quadrature."""
    boot = bootstrap_difference(_gain, list(terms[:3]), list(twins.terms[0][:3]), seed)
    value = _gain(*terms[:3]) - float(twins.gains.mean())
    if not math.isfinite(boot.ci_low):
        return Estimate(value)
    low = math.hypot(boot.value - boot.ci_low, noise)
    high = math.hypot(boot.ci_high - boot.value, noise)
    return Estimate(value, value - low, value + high)


def reconstruction_estimates(
    terms: tuple[np.ndarray, ...],
    twins: Twins | None,
    seed: int,
    downstream: float = float("nan"),
    noise: float | None = None,
) -> dict[str, Estimate]:
    """The claim's statistics from `gain_terms` of an SAE on its held-out rows and, if given,
    of the same SAE config trained on draws of the Gaussian twin of its data (`gaussian_site`).

    structure_gain: the SAE's gain over PCA at matched L0 minus the twins' mean gain
    (`structure_gain`; `noise` defaults to the twins' own spread): what the SAE gains from
    structure beyond the covariance, which an overcomplete adaptive code partly gains on any
    data. nmse and pca_nmse_minus_sae_nmse carry (paired) bootstrap intervals; dead / dense
    fractions (latents never active / active on more than DENSE_THRESHOLD of the rows) and
    downstream_recovered are point values; l0, pca_nmse and the twins' mean gain and spread are
    reported only.
    """
    err_pca, err, dev, freq = terms
    out = {}
    if twins is not None:
        noise = twins.noise_halfwidth() if noise is None else noise
        out["structure_gain"] = structure_gain(terms, twins, seed, noise)
        out["twin_gain"] = Estimate(float(twins.gains.mean()))
        out["training_noise_halfwidth"] = Estimate(noise)
    l0 = float(freq.sum())
    return out | {
        "nmse": bootstrap(_nmse, [err, dev], seed),
        "pca_nmse_minus_sae_nmse": bootstrap(_gain, [err_pca, err, dev], seed),
        "pca_nmse": Estimate(_nmse(err_pca, dev)),
        "l0": Estimate(l0),
        "pca_components": Estimate(float(max(1, round(l0)))),
        "dead_fraction": Estimate(float((freq == 0).mean())),
        "dense_fraction": Estimate(float((freq > DENSE_THRESHOLD).mean())),
        "downstream_recovered": Estimate(float(downstream)),
    }


def control_rows(n_train: int, n_atoms: int, k: int) -> int:
    """Training rows of a control: as many as the site's SAE saw, at most CONTROL_ROWS, but
    never fewer than it takes for the rarest planted atom to occur about 100 times (each row
    draws k of n_atoms atoms, the rarest with probability ~ 1 / (2 n_atoms))."""
    return min(n_train, max(CONTROL_ROWS, math.ceil(100 * 2 * n_atoms / max(k, 1))))


def planted_site(
    reference: np.ndarray, n: int, n_atoms: int, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A sparse-dictionary site shaped like `reference` (rows, d): rows = its mean + a k-sparse
    non-negative combination of n_atoms unit atoms (+ small noise), scaled to its total
    variance. Returns x (n, d) float64 and the atoms (n_atoms, d)."""
    d = reference.shape[1]
    planted = planted_sparse(n, d, n_atoms, k, seed=seed, noise=0.0, offset_norm=0.0)
    x = planted.x.astype(np.float64)
    rms = math.sqrt(float(((x - x.mean(0)) ** 2).sum(1).mean()))
    rng = np.random.default_rng([seed, 37])
    x += rng.standard_normal(x.shape) * (PLANTED_NOISE * rms / math.sqrt(d))
    target = math.sqrt(float(((reference - reference.mean(0)) ** 2).sum(1).mean()))
    x = (x - x.mean(0)) * (target / rms) + reference.mean(0)
    return x, planted.atoms.astype(np.float64)


def gaussian_site(reference: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n rows (n, d) of the Gaussian with the mean and covariance of `reference` (rows, d)."""
    mean = reference.mean(0)
    cov = np.cov(reference, rowvar=False)
    return np.random.default_rng([seed, 41]).multivariate_normal(mean, cov, size=n, method="eigh")


def train_control(
    x: np.ndarray, sae_cfg: SAEConfig, train_cfg: TrainConfig, seed: int, device: torch.device
) -> Any:
    """An SAE with the primary's config and schedule trained on x (n, d), as train_saes trains
    (checkpoints off; its files go to a temporary directory)."""
    cfg = dataclasses.replace(train_cfg, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        return train_sweep(
            x.astype(np.float32), [sae_cfg], cfg, [tmp], device=device, seed=seed, progress=False
        )[0]


def atoms_recovered(atoms: np.ndarray, sae: Any) -> float:
    """Mean over planted atoms (n_atoms, d) of the best cosine with a decoder row."""
    w = sae.W_dec.detach().double().cpu().numpy()
    w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    return float((atoms @ w.T).max(1).mean())


def reconstruction_evidence(
    saes: Mapping[str, Any],
    primary: str,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    x_fit: np.ndarray,
    x_eval: np.ndarray,
    n_train: int,
    downstream: Mapping[str, float],
    site: str,
    seed: int,
    device: torch.device,
    controls: bool = True,
) -> list[dict]:
    """Evidence rows of the reconstruction claim at one site.

    saes: name -> trained SAE of the sweep (the `primary` one is `measured`, the others are
    sensitivity rows); sae_cfg / train_cfg: the primary's config and the site's schedule, used
    to train every control SAE: TWIN_DRAWS draws of the site's Gaussian twin (the Gaussian of
    its mean and covariance; structure_gain of every case is measured against their mean gain,
    its interval widened by their spread: the training noise), a planted sparse-dictionary site
    and its own twin (positive), and a further draw of the site's twin (negative: a Gaussian has
    no structure beyond its covariance, so its structure_gain must not be significant). Each
    has the site's dimension, control_rows training rows (fewer than the site's SAE saw on a
    large site, which favours the site's SAE) and as many held-out rows as x_eval (capped);
    x_fit (rows, d): the SAEs' training activations (PCA fit, control statistics); x_eval
    (n, d): held-out activations; n_train: rows the SAEs were trained on; downstream: name ->
    downstream_recovered (NaN when not measured).
    """
    n_atoms = sae_cfg.width
    k = sae_cfg.k if sae_cfg.arch in K_ARCHITECTURES and sae_cfg.k else None
    n = control_rows(n_train, n_atoms, k or 1)
    n_eval = min(len(x_eval), CONTROL_EVAL_ROWS)

    def twin_terms(reference: np.ndarray, draw: int) -> tuple[np.ndarray, ...]:
        g = gaussian_site(reference, n + n_eval, seed + draw)
        sae = train_control(g[:n], sae_cfg, train_cfg, seed + draw, device)
        return gain_terms(sae, PCA.fit(g[:n]), g[n:])

    # seed offsets of the Gaussian draws: the site's twins 0, 3, 4...; the negative 1; the
    # planted site's twin 2
    draws = [0, *range(3, TWIN_DRAWS + 2)]
    twins = Twins(tuple(twin_terms(x_fit, d) for d in draws)) if controls else None
    rows, pca = [], PCA.fit(x_fit)
    for name, sae in saes.items():
        ds = float(downstream.get(name, float("nan")))
        note = "" if math.isfinite(ds) else "downstream not run (skipped, not a pass)"
        case = MEASURED if name == primary else f"{SENSITIVITY}{name}"
        est = reconstruction_estimates(gain_terms(sae, pca, x_eval), twins, seed, ds)
        rows += evidence_rows(CLAIM, site, case, est, note=f"sae={name}; {note}".strip("; "))
    if twins is None:
        return rows
    noise = twins.noise_halfwidth()
    k = k or max(1, round(_l0(rows, MEASURED)))  # an L1 SAE: its measured sparsity
    x, atoms = planted_site(x_fit, n + n_eval, n_atoms, k, seed)
    planted = train_control(x[:n], sae_cfg, train_cfg, seed, device)
    planted_twin = Twins((twin_terms(x[:n], 2),))
    terms = gain_terms(planted, PCA.fit(x[:n]), x[n:])
    est = reconstruction_estimates(terms, planted_twin, seed, noise=noise)
    est["atoms_recovered"] = Estimate(atoms_recovered(atoms, planted))
    rows += evidence_rows(
        CLAIM, site, POSITIVE, est, note=f"planted: {n_atoms} atoms, k={k}, {n} training rows"
    )
    g = gaussian_site(x_fit, n + n_eval, seed + 1)
    gauss = train_control(g[:n], sae_cfg, train_cfg, seed + 1, device)
    est = reconstruction_estimates(gain_terms(gauss, PCA.fit(g[:n]), g[n:]), twins, seed)
    rows += evidence_rows(
        CLAIM,
        site,
        NEGATIVE,
        est,
        note=f"a further Gaussian of the site's covariance against the first {TWIN_DRAWS}, "
        f"{n} training rows",
    )
    return rows


def _l0(rows: Sequence[Mapping], case: str) -> float:
    return next(float(r["value"]) for r in rows if r["case"] == case and r["statistic"] == "l0")


def write_reconstruction_evidence(
    sae_dirs: Mapping[str, str | Path],
    primary: str,
    sae_settings: Mapping[str, Any],
    train_settings: Mapping[str, Any],
    train_store: str | Path,
    eval_store: str | Path,
    quality: pd.DataFrame,
    site: str,
    out: str | Path,
    device: torch.device,
    seed: int = 0,
    controls: bool = True,
) -> pd.DataFrame:
    """`reconstruction_evidence` of one site, written to the CSV `out` (`controls`: train the
    claim's control SAEs; off for sites that are not judged).

    sae_dirs: {name: SAE directory} of the sweep; sae_settings: the primary's SAEConfig keys;
    train_settings: the site's TrainConfig keys; train_store / eval_store: the activation-store
    site directories the SAEs were trained and evaluated on (rows are divided by the modality
    scales an SAE recorded, as in training); quality: `site_quality` rows (downstream_recovered).
    """
    from saeprobe.claims import write_evidence
    from saeprobe.sae.site import MODALITY_SCALE

    if primary not in sae_dirs:
        raise KeyError(f"sae.primary {primary!r} is not an SAE of this sweep: {sorted(sae_dirs)}")
    train, held = ActivationStore(train_store), ActivationStore(eval_store)
    divisors: tuple[np.ndarray, np.ndarray] | tuple[None, None] = (None, None)
    scale_file = Path(sae_dirs[primary]) / MODALITY_SCALE
    if scale_file.is_file() and read_json(scale_file).get("normalize"):
        scales = read_json(scale_file)
        divisors = (train.row_divisors(scales), held.row_divisors(scales))
    x_fit = store_sample(train, PCA_FIT_ROWS, seed, divisors[0])
    x_eval = store_sample(held, len(held), seed, divisors[1])
    saes = {name: load_sae(Path(d), device) for name, d in sae_dirs.items()}
    names = [primary, *sorted(n for n in saes if n != primary)]
    short = quality["sae"].str.rsplit("/", n=1).str[-1]
    ds = dict(zip(short, quality["downstream_recovered"], strict=True))
    rows = reconstruction_evidence(
        {n: saes[n] for n in names},
        primary,
        SAEConfig.from_dict({**sae_settings, "name": primary}),
        TrainConfig.from_dict(dict(train_settings)),
        x_fit,
        x_eval,
        len(train),
        ds,
        site,
        seed,
        device,
        controls,
    )
    return write_evidence(out, rows)
