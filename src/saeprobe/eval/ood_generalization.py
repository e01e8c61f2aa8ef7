"""Task `ood_generalization`: do linear probes on SAE codes generalise out of distribution?

Multinomial logistic-regression probes (saeprobe.eval.probes: L2 penalty tuned on a held-out
part of the in-distribution training images, then refit on all of them) on the raw
activations and on each SAE's codes of a site, trained in distribution and tested on the
in-distribution test set and on shifted sets; with all units, with the top-k units by
ANOVA F (one global ranking), and with k units per class (`per_class_k`: each class's weights
restricted to its own k units, ranked one-vs-rest; with 1,000 classes a global top-k of a few
hundred leaves most classes without a unit of their own). Every probe's final fit is reported
(probe_loss, probe_grad_norm, probe_iters, probe_converged; saeprobe.eval.probes; empty on
the controls' rows). `mask_to_present` restricts predictions to the classes present in a test
set (the 200-class subsets of ImageNet-R and -A).

Evidence for the claim (saeprobe.claims, statistic `accuracy_gain`: accuracy of the treated
features minus the reference's, a paired bootstrap over test images):
- measured: the primary SAE's all-unit probe (treated) minus the raw probe (reference) on the
  shifted sets pooled (resampled within each set); the other SAEs are sensitivity rows.
- positive: a planted spurious feature. The images' `spurious.attribute` values (colour) are
  dealt to the `spurious.target` classes (superclass) by a seeded rule; superclass probes are
  trained on a view of the training images where the attribute always agrees with the class
  and tested on the in-distribution test images where it conflicts. Reference: the raw
  activations plus one planted unit per attribute value (its indicator times
  `planted_scale` medians of the raw per-unit std). In the view these units are a perfect,
  noise-free cue (no raw direction predicts the class better), so the reference probe leans on
  them and fails on the conflicting images. Treated: the reference minus the units whose
  automatic name is the attribute (the level, among the leaf label and the vision attributes,
  with the highest chance-corrected purity of their top training images): it must find the
  planted units (and may take colour-pure raw neurons with them).
- negative: the reference minus as many random other units (mean over seeded draws): the
  planted units stay, so no gain.
Per latent (for the latent atlas): `weight`, the L2 norm over classes of the latent's weights
in the SAE's all-unit probe (on standardised codes, so comparable across latents).
Reported, not judged (measured rows): the primary SAE's codes minus its attribute-named
latents against raw and against all its codes, trained on a view where the attribute agrees
`agreement` (95%) of the time. Where the images have no such attribute (ImageNet), the controls
are absent and the site is inconclusive.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.activations.store import ActivationStore
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
from saeprobe.eval.probes import NO_FIT, STD_FLOOR, fit_probe, per_class_mask, rank_features
from saeprobe.eval.semantics import purity, top_images
from saeprobe.stats import Estimate, bootstrap

log = logging.getLogger(__name__)

CLAIM = "ood_generalization"
STATISTIC = "accuracy_gain"
NAN = Estimate(float("nan"))
MIN_VIEW = 20  # fewer training images in a view: no planted control


@dataclass(frozen=True)
class ProbeSettings:
    weight_decays: Sequence[float]
    val_fraction: float
    seed: int
    device: torch.device
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpuriousSettings:
    """The planted control (config vision.ood_generalization.spurious)."""

    attribute: str = "colour"
    target: str = "superclass"
    agreement: float = 0.95
    random_draws: int = 3
    top_n: int = 16
    min_active: int = 8
    planted_scale: float = 3.0


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
    per_class_k: Sequence[int] = (),
    probe_options: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[dict], pd.DataFrame]:
    """Probe accuracy on every test set, for raw and SAE features, all units and top-k units,
    the claim's evidence rows and each SAE latent's probe `weight` (rows of sae, model, site,
    features, latent, weight; module docstring).

    Top-k units are ranked by their ANOVA F statistic on the training set; their probes use
    the penalty tuned for the probe on all units. With mask_to_present, predictions are
    restricted to the classes present in the test set. Test images whose class the probe never
    saw are left out and counted in `n_unseen`. shifted: the test sets of the measured case;
    primary: the judged SAE (None: no evidence); spurious: the planted controls (None: absent),
    tested on `control_dataset` (one of test_datasets, in distribution); naming_levels: image
    columns besides the leaf label that compete to name latents; per_class_k: the per-class
    sparse probes' k; probe_options: fit_probe's max_iter, grad_tol, std_floor.
    """
    rows, evidence, weights = [], [], []
    options = dict(probe_options or {})
    settings = ProbeSettings(weight_decays, val_fraction, seed, device, options)
    for site in sites.sites:
        train = load_site(sites.activation_dir(train_dataset), site, max_train, seed)
        tests = {d: load_site(sites.activation_dir(d), site) for d in test_datasets}
        classes = sorted(set(train.labels))
        y = class_ids(train.labels, classes)
        correct: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # features -> (correct, strata)
        for features in [RAW, *sites.sae_names]:
            sae = None if features == RAW else sites.load_sae(site, features, device)
            x_train = train.raw if sae is None else sae_codes(sae, train)
            ranking = rank_features(x_train, y)
            decays = list(weight_decays)
            selections = [(None, "all"), *[(k, "global") for k in top_k if k < x_train.shape[1]]]
            selections += [(k, "per_class") for k in per_class_k if k < x_train.shape[1]]
            probes = []
            for k, selection in selections:
                mask = None
                if selection == "per_class":
                    full_mask = per_class_mask(
                        x_train, y, len(classes), k, options.get("std_floor", STD_FLOOR)
                    )
                    cols = np.flatnonzero(full_mask.any(axis=1))
                    mask = full_mask[cols]
                else:
                    cols = None if k is None else ranking[:k]
                probe = fit_probe(
                    x_train, y, len(classes), decays, val_fraction, seed, device=device,
                    mask=mask, columns=cols, **options,
                )  # fmt: skip
                decays = [probe.weight_decay]  # sparse probes reuse the full probe's penalty
                probes.append((k, selection, probe))
                if k is None and sae is not None:
                    weights.append(
                        pd.DataFrame(
                            {
                                "sae": sites.sae_id(site, features),
                                "model": sites.model,
                                "site": site,
                                "features": features,
                                "latent": np.arange(x_train.shape[1]),
                                "weight": probe.weight.norm(dim=1).numpy(),
                            }
                        )
                    )
            n_features = x_train.shape[1]
            del x_train
            by_probe: dict[int, list[dict]] = {i: [] for i in range(len(probes))}
            hits, strata = [], []
            for i, (dataset, data) in enumerate(tests.items()):
                x_test = data.raw if sae is None else sae_codes(sae, data)  # one set at a time
                target = class_ids(data.labels, classes)
                seen = target >= 0
                present = np.unique(target[seen]) if mask_to_present else None
                for j, (k, selection, probe) in enumerate(probes):
                    pred = probe.predict(x_test, present)[seen]  # the probe reads its columns
                    if k is None and dataset in shifted:
                        hits.append(pred == target[seen])
                        strata.append(np.full(int(seen.sum()), i))
                    by_probe[j].append(
                        {
                            "model": sites.model,
                            "site": site,
                            "layer": site_layer(site),
                            "features": features,
                            "k": "all" if k is None else str(k),
                            "selection": selection,
                            "n_features": n_features if k is None else len(probe.std),
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
                            **probe.fit.columns(),
                        }
                    )
                del x_test
            rows += [row for j in range(len(probes)) for row in by_probe[j]]
            if hits:
                correct[features] = (np.concatenate(hits), np.concatenate(strata))
            log.info("ood_generalization %s/%s done", site, features)
        if primary is None:
            continue
        site_id = f"{sites.model}/{site}"
        evidence += measured_evidence(site_id, correct, primary, shifted, seed)
        if primary in sites.sae_names and spurious is not None:
            control_rows, control_evidence = spurious_controls(
                TrainImages(sites.activation_dir(train_dataset), site),
                tests.get(control_dataset or ""),
                sites.load_sae(site, primary, device),
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
    latents = pd.concat(weights, ignore_index=True) if weights else pd.DataFrame()
    return pd.DataFrame(rows), evidence, latents


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


def training_view(agree: np.ndarray, size: int | None, agreement: float, seed: int) -> np.ndarray:
    """(m,) sorted indices of the spurious view: a fraction `agreement` of them agreeing, the
    largest m <= `size` the images allow."""
    yes, no = np.flatnonzero(agree), np.flatnonzero(~agree)
    n = len(agree) if size is None else min(size, len(agree))
    n = min(n, int(len(yes) / agreement), int(len(no) / (1 - agreement)) if agreement < 1 else n)
    rng = np.random.default_rng([seed, 4111])
    n_yes = round(agreement * n)
    view = np.concatenate(
        [rng.choice(yes, n_yes, replace=False), rng.choice(no, n - n_yes, replace=False)]
    )
    return np.sort(view)


def planted_units(values: np.ndarray, levels: Sequence[str], scale: float) -> np.ndarray:
    """(n, len(levels)) float32: one unit per attribute value, `scale` where the image has it.

    values: (n,) each image's attribute value.
    """
    return (scale * (np.asarray(values)[:, None] == np.asarray(levels)[None, :])).astype(np.float32)


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
    """Correctness per test image, (n,) float (a mean over draws for random; NaN: no draw)."""

    reference: np.ndarray
    minus_named: np.ndarray
    minus_random: np.ndarray
    n_removed: int


def _probe_correct(
    x_train: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_classes: int,
    probe: ProbeSettings, weight_decays: Sequence[float] | None = None,
) -> tuple[np.ndarray, float]:  # fmt: skip
    """(n_test,) 1.0 where the probe is right, and the penalty it chose."""
    model = fit_probe(
        x_train, y, n_classes, weight_decays or probe.weight_decays, probe.val_fraction,
        probe.seed, device=probe.device, **probe.options,
    )  # fmt: skip
    return (model.predict(x_test) == y_test).astype(np.float64), model.weight_decay


def removal_control(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    remove: np.ndarray,
    random_draws: int,
    probe: ProbeSettings,
    n_classes: int,
) -> RemovalResult:
    """Probes on all units of a reference feature set, on it minus the `remove` units, and
    minus as many random other units (`random_draws` seeded draws, correctness averaged),
    trained on one view and tested on one group. The probes with units removed reuse the
    penalty tuned for the reference probe.

    x_*: (n, units); y_*: (n,) class ids; remove: (units,) bool.
    """
    n_removed = int(remove.sum())
    reference, decay = _probe_correct(x_train, y_train, x_test, y_test, n_classes, probe)

    def without(drop: np.ndarray) -> np.ndarray:
        keep = np.setdiff1d(np.arange(x_train.shape[1]), drop)
        x, xt = x_train[:, keep], x_test[:, keep]
        return _probe_correct(x, y_train, xt, y_test, n_classes, probe, [decay])[0]

    minus = without(np.flatnonzero(remove))
    rng = np.random.default_rng([probe.seed, 4127])
    others = np.flatnonzero(~remove)
    draws = [
        without(rng.choice(others, min(n_removed, len(others)), replace=False))
        for _ in range(random_draws)
    ]
    random = np.mean(draws, axis=0) if draws else np.full(len(y_test), np.nan)
    return RemovalResult(reference, minus, random, n_removed)


def _absent(note: str) -> list[dict]:
    return [
        *evidence_rows(CLAIM, "", POSITIVE, {STATISTIC: NAN}, note),
        *evidence_rows(CLAIM, "", NEGATIVE, {STATISTIC: NAN}, note),
    ]


class TrainImages:
    """A site's training images, read from the store only when first needed: `images` (the
    example table) without the activations, `data` the whole SiteData."""

    def __init__(self, activation_dir: Path, site: str) -> None:
        self.activation_dir, self.site = activation_dir, site
        self._data: SiteData | None = None

    @property
    def images(self) -> pd.DataFrame:
        if self._data is not None:
            return self._data.images
        return ActivationStore(self.activation_dir / self.site).examples()

    @property
    def data(self) -> SiteData:
        if self._data is None:
            self._data = load_site(self.activation_dir, self.site)
        return self._data


def spurious_controls(
    train: SiteData | TrainImages,
    test: SiteData | None,
    sae: Any,
    spurious: SpuriousSettings,
    probe: ProbeSettings,
    naming_levels: Sequence[str],
    max_train: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """The positive and negative controls of one site (module docstring), and the SAE's own
    removal beside them (reported, not judged); the view holds at most `max_train` images.

    Returns table rows (features 'raw', 'sae', 'sae -<attribute>', 'planted', 'planted
    -<attribute>', 'planted -random'; the caller fills in model, site and the SAE's name) and
    evidence rows (site left to the caller).
    """
    needed = {spurious.attribute, spurious.target}
    missing = sorted(
        needed - (set(train.images.columns) & set(test.images.columns if test else []))
    )
    if test is None or missing:
        return [], _absent(
            f"no {', '.join(missing) or 'test set'} column in the images: no planted control"
        )
    if isinstance(train, TrainImages):
        train = train.data
    attr = spurious.attribute
    classes = sorted(train.images[spurious.target].astype(str).unique())
    values_train = train.images[attr].astype(str).to_numpy()
    values_test = test.images[attr].astype(str).to_numpy()
    attribute_values = sorted(set(values_train))
    owner = assign_values(classes, attribute_values, probe.seed)
    agree = agreeing(train.images, spurious, owner)
    view = training_view(agree, max_train, spurious.agreement, probe.seed)
    full_view = training_view(agree, max_train, 1.0, probe.seed)
    conflicting = ~agreeing(test.images, spurious, owner)
    if min(len(view), len(full_view)) < MIN_VIEW or not conflicting.any():
        return [], _absent(
            f"too few images for the views ({len(view)}, {len(full_view)}) or no conflicting "
            "test image"
        )
    levels = {"label": train.labels}
    present = [c for c in naming_levels if c in train.images.columns]
    levels.update({c: train.images[c].astype(str).to_numpy() for c in present})
    levels.setdefault(attr, values_train)
    y_all = class_ids(train.images[spurious.target].astype(str).to_numpy(), classes)
    y_train = y_all[view]
    y_test = class_ids(test.images[spurious.target].astype(str).to_numpy(), classes)[conflicting]
    n_classes = len(classes)
    raw_train, raw_test = train.raw, test.raw

    # the planted reference: raw activations and one unit per attribute value
    scale = spurious.planted_scale * float(np.median(raw_train.std(axis=0)))
    ref_train = np.concatenate(
        [raw_train, planted_units(values_train, attribute_values, scale)], axis=1
    )
    ref_test = np.concatenate([raw_test, planted_units(values_test, attribute_values, scale)], 1)
    ref_named = named_latents(ref_train, levels, spurious.top_n, spurious.min_active) == attr
    planted = ref_named[raw_train.shape[1] :]
    ref = removal_control(
        ref_train[full_view], y_all[full_view], ref_test[conflicting], y_test, ref_named,
        spurious.random_draws, probe, n_classes,
    )  # fmt: skip

    # the SAE's own case: its latents named after the attribute removed (not judged)
    codes_train, codes_test = sae_codes(sae, train), sae_codes(sae, test)
    sae_named = named_latents(codes_train, levels, spurious.top_n, spurious.min_active) == attr
    sae_res = removal_control(
        codes_train[view], y_train, codes_test[conflicting], y_test, sae_named, 0, probe,
        n_classes,
    )  # fmt: skip
    raw, _ = _probe_correct(raw_train[view], y_train, raw_test[conflicting], y_test, n_classes,
                            probe)  # fmt: skip

    n_raw, width = raw_train.shape[1], codes_train.shape[1]
    n_ref = ref_train.shape[1]
    table = []
    for view_name, label, correct, n_features, n_removed in (
        ("spurious", "raw", raw, n_raw, 0),
        ("spurious", "sae", sae_res.reference, width, 0),
        ("spurious", f"sae -{attr}", sae_res.minus_named, width - sae_res.n_removed,
         sae_res.n_removed),
        ("planted", "raw+planted", ref.reference, n_ref, 0),
        ("planted", f"raw+planted -{attr}", ref.minus_named, n_ref - ref.n_removed, ref.n_removed),
        ("planted", "raw+planted -random", ref.minus_random, n_ref - ref.n_removed,
         ref.n_removed),
    ):  # fmt: skip
        share = spurious.agreement if view_name == "spurious" else 1.0
        table.append(
            {
                "features": label,
                "k": "all",
                "n_features": n_features,
                "train_dataset": f"{attr} agrees {share:.0%}",
                "test_dataset": f"conflicting ({view_name})",
                "view": view_name,
                "target": spurious.target,
                "accuracy": float(correct.mean()),
                "n": int(conflicting.sum()),
                "n_unseen": 0,
                "weight_decay": float("nan"),
                "n_removed": n_removed,
                "selection": "all",
                **{column: float("nan") for column in NO_FIT.columns()},
            }
        )
    seed = probe.seed
    context = (
        f"{spurious.target} probes trained on a view where {attr} always agrees with "
        f"{spurious.target} (n={len(full_view)}), tested on the "
        f"{int(conflicting.sum())} conflicting test images; reference = raw + "
        f"{len(attribute_values)} planted {attr} units (scale {scale:.3g}), accuracy "
        f"{ref.reference.mean():.3f}"
    )
    note = (
        f"{context}; {ref.n_removed} units named {attr} removed ({int(planted.sum())} of the "
        f"planted, {ref.n_removed - int(planted.sum())} raw), accuracy {ref.minus_named.mean():.3f}"
    )
    sae_note = (
        f"not judged: the SAE on the view where {attr} agrees with {spurious.target} "
        f"{spurious.agreement:.0%} (n={len(view)}) minus its {sae_res.n_removed} latents named "
        f"{attr} ({sae_res.minus_named.mean():.3f}) vs raw ({raw.mean():.3f}) and vs all its "
        f"codes ({sae_res.reference.mean():.3f}), on the {int(conflicting.sum())} conflicting "
        f"test images"
    )
    positive = {STATISTIC: paired_difference(ref.minus_named, ref.reference, seed)}
    sae_case = {
        f"sae_minus_{attr}_vs_raw": paired_difference(sae_res.minus_named, raw, seed),
        "sae_removal_gain": paired_difference(sae_res.minus_named, sae_res.reference, seed),
    }
    random_note = (
        f"{context}; {ref.n_removed} random units not named {attr} removed, mean over "
        f"{spurious.random_draws} draws, accuracy {ref.minus_random.mean():.3f}"
    )
    negative = {STATISTIC: paired_difference(ref.minus_random, ref.reference, seed)}
    if ref.n_removed == 0:
        positive[STATISTIC] = negative[STATISTIC] = NAN
        note = random_note = f"no unit is named {attr}: the planted control failed"
    return table, [
        *evidence_rows(CLAIM, "", MEASURED, sae_case, sae_note),
        *evidence_rows(CLAIM, "", POSITIVE, positive, note),
        *evidence_rows(CLAIM, "", NEGATIVE, negative, random_note),
    ]
