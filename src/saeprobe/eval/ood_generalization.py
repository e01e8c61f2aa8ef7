"""Task `ood_generalization`: do linear probes on SAE codes generalise out of distribution?

Multinomial logistic-regression probes (saeprobe.eval.probes: L2 penalty tuned on a held-out
part of the in-distribution training images, then refit on all of them) on the raw
activations and on each SAE's codes of a site, trained in distribution and tested on the
in-distribution test set and on shifted sets; with all units, and with the top-k units by
ANOVA F. `mask_to_present` restricts predictions to the classes present in a test set (the
200-class subsets of ImageNet-R and -A).

Evidence for the claim (saeprobe.claims, statistic `accuracy_sae_minus_raw`, a paired
bootstrap over test images of the accuracy difference):
- measured: the primary SAE's all-unit probe minus the raw probe on the shifted sets pooled
  (resampled within each set); the other SAEs are sensitivity rows.
- positive: a planted spurious correlation. The images' `spurious.attribute` values (colour)
  are dealt to the `spurious.target` classes (superclass) by a seeded rule; a *spurious view*
  of the training images keeps `agreement` (95%) of them whose attribute agrees with their
  class, a *balanced view* of the same size keeps the natural independence. Superclass probes
  are trained on the spurious view and tested on the in-distribution test images whose
  attribute conflicts with their class: the primary SAE's codes minus the latents whose
  automatic name is the attribute (the level, among the leaf label and the vision attributes,
  with the highest chance-corrected purity of their top training images) against raw.
- negative: the same with as many random other latents removed (mean over seeded draws).
The balanced view's difference is reported beside the positive, not judged. Where the images
have no such attribute (ImageNet), the controls are absent and the site is inconclusive.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows
from saeprobe.eval.features import (
    RAW,
    ModelSites,
    SiteData,
    class_ids,
    load_site,
    sae_codes,
    site_layer,
)
from saeprobe.eval.probes import fit_probe, rank_features
from saeprobe.eval.semantics import purity, top_images
from saeprobe.stats import Estimate, bootstrap

log = logging.getLogger(__name__)

CLAIM = "ood_generalization"
STATISTIC = "accuracy_sae_minus_raw"
NAN = Estimate(float("nan"))
MIN_VIEW = 20  # fewer training images in a view: no planted control


@dataclass(frozen=True)
class ProbeSettings:
    weight_decays: Sequence[float]
    val_fraction: float
    seed: int
    device: torch.device


@dataclass(frozen=True)
class SpuriousSettings:
    """The planted control (config vision.ood_generalization.spurious)."""

    attribute: str = "colour"
    target: str = "superclass"
    agreement: float = 0.95
    random_draws: int = 3
    top_n: int = 16
    min_active: int = 8


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int, strata=None) -> Estimate:
    """Mean of a - b (n,) per-image scores (e.g. correct = 1) with a paired bootstrap CI."""
    if len(a) == 0:
        return NAN
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return bootstrap(lambda d: float(d.mean()), [diff], seed, strata=strata)


# -- measured: the table's probes ------------------------------------------------------------


def ood_generalization(
    sites: ModelSites,
    train_dataset: str,
    test_datasets: Sequence[str],
    top_k: Sequence[int],
    max_train: int | None,
    weight_decays: Sequence[float],
    val_fraction: float,
    mask_to_present: bool,
    seed: int,
    device: torch.device,
    shifted: Sequence[str] = (),
    primary: str | None = None,
    spurious: SpuriousSettings | None = None,
    control_dataset: str | None = None,
    naming_levels: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[dict]]:
    """Probe accuracy on every test set, for raw and SAE features, all units and top-k units,
    and the claim's evidence rows (module docstring).

    Top-k units are ranked by their ANOVA F statistic on the training set; their probes use
    the penalty tuned for the probe on all units. With mask_to_present, predictions are
    restricted to the classes present in the test set. Test images whose class the probe never
    saw are left out and counted in `n_unseen`. shifted: the test sets of the measured case;
    primary: the judged SAE (None: no evidence); spurious: the planted controls (None: absent),
    tested on `control_dataset` (one of test_datasets, in distribution); naming_levels: image
    columns besides the leaf label that compete to name latents.
    """
    rows, evidence = [], []
    settings = ProbeSettings(weight_decays, val_fraction, seed, device)
    for site in sites.sites:
        train = load_site(sites.activation_dir(train_dataset), site, max_train, seed)
        tests = {d: load_site(sites.activation_dir(d), site) for d in test_datasets}
        classes = sorted(set(train.labels))
        y = class_ids(train.labels, classes)
        correct: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # features -> (correct, strata)
        saes = sites.load_saes(site, device)
        feature_sets: list[tuple[str, Any]] = [(RAW, None), *saes.items()]
        for features, sae in feature_sets:
            x_train = train.raw if sae is None else sae_codes(sae, train)
            x_tests = {d: (t.raw if sae is None else sae_codes(sae, t)) for d, t in tests.items()}
            ranking = rank_features(x_train, y)
            decays = list(weight_decays)
            for k in [None, *[k for k in top_k if k < x_train.shape[1]]]:
                cols = slice(None) if k is None else ranking[:k]
                probe = fit_probe(
                    x_train[:, cols], y, len(classes), decays, val_fraction, seed, device=device
                )
                decays = [probe.weight_decay]  # top-k probes reuse the full probe's penalty
                hits, strata = [], []
                for i, (dataset, data) in enumerate(tests.items()):
                    target = class_ids(data.labels, classes)
                    seen = target >= 0
                    present = np.unique(target[seen]) if mask_to_present else None
                    pred = probe.predict(x_tests[dataset][seen][:, cols], present)
                    if k is None and dataset in shifted:
                        hits.append(pred == target[seen])
                        strata.append(np.full(int(seen.sum()), i))
                    rows.append(
                        {
                            "model": sites.model,
                            "site": site,
                            "layer": site_layer(site),
                            "features": features,
                            "k": "all" if k is None else str(k),
                            "n_features": x_train.shape[1] if k is None else k,
                            "train_dataset": train_dataset,
                            "test_dataset": dataset,
                            "view": "",
                            "target": "label",
                            "accuracy": float(np.mean(pred == target[seen]))
                            if seen.any()
                            else float("nan"),
                            "n": int(seen.sum()),
                            "n_unseen": int((~seen).sum()),
                            "weight_decay": probe.weight_decay,
                        }
                    )
                if k is None and hits:
                    correct[features] = (np.concatenate(hits), np.concatenate(strata))
            log.info("ood_generalization %s/%s done", site, features)
        if primary is None:
            continue
        site_id = f"{sites.model}/{site}"
        evidence += measured_evidence(site_id, correct, primary, shifted, seed)
        if primary in saes and spurious is not None:
            train_all = load_site(sites.activation_dir(train_dataset), site)
            control_rows, control_evidence = spurious_controls(
                train_all,
                tests.get(control_dataset or ""),
                saes[primary],
                spurious,
                settings,
                naming_levels,
                max_train,
            )
            for r in control_rows:
                r.update(model=sites.model, site=site, layer=site_layer(site))
                r["features"] = r["features"].replace("sae", primary)
            rows += control_rows
            evidence += [{**r, "site": site_id} for r in control_evidence]
    return pd.DataFrame(rows), evidence


def measured_evidence(
    site: str,
    correct: Mapping[str, tuple[np.ndarray, np.ndarray]],
    primary: str,
    shifted: Sequence[str],
    seed: int,
) -> list[dict]:
    """Measured (primary SAE) and sensitivity rows: SAE minus raw accuracy on the shifted sets.

    correct: features -> ((n,) bool correct per shifted image, (n,) test-set id per image).
    """
    out = []
    raw = correct.get(RAW)
    for features, (hits, strata) in correct.items():
        if features == RAW:
            continue
        case = MEASURED if features == primary else f"{SENSITIVITY}{features}"
        est = paired_difference(hits, raw[0], seed, strata) if raw is not None else NAN
        note = f"{len(hits)} images of {', '.join(shifted)}; accuracy {hits.mean():.3f}"
        if raw is not None:
            note += f" vs raw {raw[0].mean():.3f}"
        out += evidence_rows(CLAIM, site, case, {STATISTIC: est}, note)
    if primary not in correct:
        out += evidence_rows(CLAIM, site, MEASURED, {STATISTIC: NAN}, "no shifted test set")
    return out


# -- positive and negative: a planted spurious correlation ----------------------------------


def assign_values(classes: Sequence[str], values: Sequence[str], seed: int) -> dict[str, str]:
    """A seeded disjoint assignment of attribute values to classes: value -> class.

    The values are shuffled and dealt round robin, so every class gets at least one when
    there are at least as many values as classes.
    """
    order = np.random.default_rng([seed, 4099]).permutation(sorted(values))
    ordered = sorted(classes)
    return {str(v): ordered[i % len(ordered)] for i, v in enumerate(order)}


def agreeing(images: pd.DataFrame, spurious: SpuriousSettings, owner: Mapping[str, str]):
    """(n,) bool: the image's attribute value is one dealt to its target class."""
    values = images[spurious.attribute].astype(str).map(owner)
    return (values == images[spurious.target].astype(str)).to_numpy()


def training_views(
    agree: np.ndarray, size: int | None, agreement: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the spurious view (a fraction `agreement` agreeing) and of a balanced view
    (a uniform sample) of the same size: the largest size <= `size` the images allow."""
    yes, no = np.flatnonzero(agree), np.flatnonzero(~agree)
    n = len(agree) if size is None else min(size, len(agree))
    n = min(n, int(len(yes) / agreement), int(len(no) / (1 - agreement)) if agreement < 1 else n)
    rng = np.random.default_rng([seed, 4111])
    n_yes = round(agreement * n)
    view = np.concatenate(
        [rng.choice(yes, n_yes, replace=False), rng.choice(no, n - n_yes, replace=False)]
    )
    balanced = rng.choice(len(agree), n, replace=False)
    return np.sort(view), np.sort(balanced)


def named_latents(
    codes: np.ndarray, levels: Mapping[str, np.ndarray], top_n: int, min_active: int
) -> np.ndarray:
    """(width,) the level naming each latent ('' for rare ones): the level whose modal value
    is the purest among the latent's top images, purity corrected for chance,
    (p - 1/K) / (1 - 1/K) with K the level's number of values.

    codes: (n_images, width); levels: level name -> (n_images,) labels.
    """
    top = top_images(codes, top_n, positive_only=True)
    scores = []
    for labels in levels.values():
        k = max(len(np.unique(labels)), 2)
        p, _ = purity(np.asarray(labels), top, min_active)
        scores.append((p - 1 / k) / (1 - 1 / k))
    scores = np.stack(scores)  # (levels, width)
    rare = np.isnan(scores).all(axis=0)
    best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=0)
    names = np.array(list(levels), dtype=object)[best]
    names[rare] = ""
    return names


@dataclass
class RemovalResult:
    """Correctness per conflicting test image, (n,) float (a mean over draws for random)."""

    raw: np.ndarray
    all_codes: np.ndarray
    minus_spurious: np.ndarray
    minus_random: np.ndarray
    accuracy: dict[str, float]  # features -> accuracy on the whole test group
    n_removed: int


def _probe_correct(
    x_train: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_classes: int,
    probe: ProbeSettings, weight_decays: Sequence[float] | None = None,
) -> tuple[np.ndarray, float]:  # fmt: skip
    """(n_test,) 1.0 where the probe is right, and the penalty it chose."""
    model = fit_probe(
        x_train, y, n_classes, weight_decays or probe.weight_decays, probe.val_fraction,
        probe.seed, device=probe.device,
    )  # fmt: skip
    return (model.predict(x_test) == y_test).astype(np.float64), model.weight_decay


def removal_control(
    raw_train: np.ndarray,
    codes_train: np.ndarray,
    y_train: np.ndarray,
    raw_test: np.ndarray,
    codes_test: np.ndarray,
    y_test: np.ndarray,
    remove: np.ndarray,
    random_draws: int,
    probe: ProbeSettings,
) -> RemovalResult:
    """Probes on raw, all codes, codes minus the `remove` latents and minus as many random
    other latents (`random_draws` seeded draws), trained on one view and tested on one group.
    The probes with latents removed reuse the penalty tuned for the all-codes probe.

    raw_*: (n, d); codes_*: (n, width); y_*: (n,) class ids; remove: (width,) bool.
    """
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    n_removed = int(remove.sum())
    raw, _ = _probe_correct(raw_train, y_train, raw_test, y_test, n_classes, probe)
    full, decay = _probe_correct(codes_train, y_train, codes_test, y_test, n_classes, probe)

    def without(cols: np.ndarray) -> np.ndarray:
        x, xt = codes_train[:, cols], codes_test[:, cols]
        return _probe_correct(x, y_train, xt, y_test, n_classes, probe, [decay])[0]

    minus = without(np.flatnonzero(~remove))
    rng = np.random.default_rng([probe.seed, 4127])
    others = np.flatnonzero(~remove)
    draws = []
    for _ in range(random_draws):
        drop = rng.choice(others, min(n_removed, len(others)), replace=False)
        draws.append(without(np.setdiff1d(np.arange(codes_train.shape[1]), drop)))
    random = np.mean(draws, axis=0) if draws else np.full(len(y_test), np.nan)
    return RemovalResult(
        raw=raw,
        all_codes=full,
        minus_spurious=minus,
        minus_random=random,
        accuracy={
            "raw": float(raw.mean()),
            "sae": float(full.mean()),
            "minus_spurious": float(minus.mean()),
            "minus_random": float(random.mean()),
        },
        n_removed=n_removed,
    )


def spurious_controls(
    train: SiteData,
    test: SiteData | None,
    sae: Any,
    spurious: SpuriousSettings,
    probe: ProbeSettings,
    naming_levels: Sequence[str],
    max_train: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """The positive and negative controls of one site (module docstring); both views hold at
    most `max_train` images.

    Returns table rows (features 'raw', 'sae', 'sae -<attribute>', 'sae -random'; the caller
    fills in model, site and the SAE's name) and evidence rows (site left to the caller).
    """
    needed = {spurious.attribute, spurious.target}
    missing = sorted(
        needed - (set(train.images.columns) & set(test.images.columns if test else []))
    )
    if test is None or missing:
        note = f"no {', '.join(missing) or 'test set'} column in the images: no planted control"
        return [], [
            *evidence_rows(CLAIM, "", POSITIVE, {STATISTIC: NAN}, note),
            *evidence_rows(CLAIM, "", NEGATIVE, {STATISTIC: NAN}, note),
        ]
    classes = sorted(train.images[spurious.target].astype(str).unique())
    values = train.images[spurious.attribute].astype(str).unique()
    owner = assign_values(classes, values, probe.seed)
    spurious_view, balanced_view = training_views(
        agreeing(train.images, spurious, owner), max_train, spurious.agreement, probe.seed
    )
    conflicting = ~agreeing(test.images, spurious, owner)
    if len(spurious_view) < MIN_VIEW or not conflicting.any():
        note = f"too few images for the views ({len(spurious_view)}) or no conflicting test image"
        return [], [
            *evidence_rows(CLAIM, "", POSITIVE, {STATISTIC: NAN}, note),
            *evidence_rows(CLAIM, "", NEGATIVE, {STATISTIC: NAN}, note),
        ]
    codes_train, codes_test = sae_codes(sae, train), sae_codes(sae, test)
    levels = {"label": train.labels}
    present = [c for c in naming_levels if c in train.images.columns]
    levels.update({c: train.images[c].astype(str).to_numpy() for c in present})
    levels.setdefault(spurious.attribute, train.images[spurious.attribute].astype(str).to_numpy())
    names = named_latents(codes_train, levels, spurious.top_n, spurious.min_active)
    remove = names == spurious.attribute
    y_train = class_ids(train.images[spurious.target].astype(str).to_numpy(), classes)
    y_test = class_ids(test.images[spurious.target].astype(str).to_numpy(), classes)
    raw_train, raw_test = train.raw, test.raw
    table, results = [], {}
    for view, idx in (("spurious", spurious_view), ("balanced", balanced_view)):
        res = removal_control(
            raw_train[idx], codes_train[idx], y_train[idx],
            raw_test[conflicting], codes_test[conflicting], y_test[conflicting],
            remove, spurious.random_draws if view == "spurious" else 0, probe,
        )  # fmt: skip
        results[view] = res
        for features, acc in res.accuracy.items():
            if np.isnan(acc):
                continue
            label = {
                "minus_spurious": f"sae -{spurious.attribute}",
                "minus_random": "sae -random",
            }.get(features, features)
            table.append(
                {
                    "features": label,
                    "k": "all",
                    "n_features": raw_train.shape[1]
                    if features == "raw"
                    else codes_train.shape[1]
                    - (res.n_removed if features.startswith("minus") else 0),
                    "train_dataset": f"{view} view",
                    "test_dataset": f"conflicting ({view} view)",
                    "view": view,
                    "target": spurious.target,
                    "accuracy": acc,
                    "n": int(conflicting.sum()),
                    "n_unseen": 0,
                    "weight_decay": float("nan"),
                    "n_removed": res.n_removed,
                }
            )
    seed = probe.seed
    s, b = results["spurious"], results["balanced"]
    note = (
        f"{spurious.target} probes trained on a view where {spurious.attribute} agrees with "
        f"{spurious.target} {spurious.agreement:.0%} (n={len(spurious_view)}), tested on the "
        f"{int(conflicting.sum())} conflicting test images; {s.n_removed} latents named "
        f"{spurious.attribute} removed; raw accuracy {s.accuracy['raw']:.3f}"
    )
    positive = {
        STATISTIC: paired_difference(s.minus_spurious, s.raw, seed),
        "all_codes_minus_raw": paired_difference(s.all_codes, s.raw, seed),
        "removal_gain": paired_difference(s.minus_spurious, s.all_codes, seed),
        "balanced_view_" + STATISTIC: paired_difference(b.minus_spurious, b.raw, seed),
    }
    negative = {
        STATISTIC: paired_difference(s.minus_random, s.raw, seed),
        "removal_gain": paired_difference(s.minus_random, s.all_codes, seed),
    }
    random_note = f"{s.n_removed} random other latents removed, mean over "
    random_note += f"{spurious.random_draws} draws; same view and test group"
    if s.n_removed == 0:
        positive[STATISTIC] = negative[STATISTIC] = NAN
        note = random_note = f"no latent is named {spurious.attribute}: no planted control"
    evidence = [
        *evidence_rows(CLAIM, "", POSITIVE, positive, note),
        *evidence_rows(CLAIM, "", NEGATIVE, negative, random_note),
    ]
    return table, evidence
