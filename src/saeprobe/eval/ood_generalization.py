"""Task `ood_generalization`: do linear probes on SAE codes generalise out of distribution?

Multinomial logistic-regression probes (saeprobe.eval.probes: L2 penalty tuned on a held-out
part of the in-distribution training images, then refit on all of them) on the raw
activations and on each SAE's codes of a site, trained in distribution and tested on the
in-distribution test set and on shifted sets; with all units, and with the top-k units by
ANOVA F. `mask_to_present` restricts predictions to the classes present in a test set (the
200-class subsets of ImageNet-R and -A).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.eval.features import (
    RAW,
    ModelSites,
    class_ids,
    load_site,
    sae_codes,
    site_layer,
)
from saeprobe.eval.probes import fit_probe, rank_features

log = logging.getLogger(__name__)


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
) -> pd.DataFrame:
    """Probe accuracy on every test set, for raw and SAE features, all units and top-k units.

    Top-k units are ranked by their ANOVA F statistic on the training set; their probes use
    the penalty tuned for the probe on all units. With
    mask_to_present, predictions are restricted to the classes present in the test set (the
    200-class masks of ImageNet-R and -A). Test images whose class the probe never saw are
    left out and counted in `n_unseen`.
    """
    rows = []
    for site in sites.sites:
        train = load_site(sites.activation_dir(train_dataset), site, max_train, seed)
        tests = {d: load_site(sites.activation_dir(d), site) for d in test_datasets}
        classes = sorted(set(train.labels))
        y = class_ids(train.labels, classes)
        feature_sets: list[tuple[str, Any]] = [(RAW, None)]
        feature_sets += list(sites.load_saes(site, device).items())
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
                for dataset, data in tests.items():
                    target = class_ids(data.labels, classes)
                    seen = target >= 0
                    present = np.unique(target[seen]) if mask_to_present else None
                    pred = probe.predict(x_tests[dataset][seen][:, cols], present)
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
                            "accuracy": float(np.mean(pred == target[seen]))
                            if seen.any()
                            else float("nan"),
                            "n": int(seen.sum()),
                            "n_unseen": int((~seen).sum()),
                            "weight_decay": probe.weight_decay,
                        }
                    )
            log.info("ood_generalization %s/%s done", site, features)
    return pd.DataFrame(rows)
