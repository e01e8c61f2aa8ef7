"""Task `ontology`: do SAE latents recover the model's ontology (the class hierarchy)?

Definitions, per unit (an SAE latent, a raw neuron, a PCA direction or a random direction of
the same site), over the in-distribution images and the hierarchy pruned to their labels:
- top images: the `top_n` images with the highest activation (projection for directions);
  SAE latents count only images where they are active (> 0) and need `min_active` of them.
- LCH (lowest common hypernym) at tolerance tau: the deepest hierarchy node whose subtree
  holds the labels of at least a fraction tau of the top images (tau = 1: the strict lowest
  common ancestor of all of them). Ties at equal depth go to the node holding more images.
- height: the LCH's height in the pruned hierarchy (0 = a leaf class).
- a unit is *pure* when its LCH is not the root.
- coverage: the fraction of internal non-root nodes of the pruned hierarchy that are the LCH of
  at least one pure unit (`coverage_internal`); `coverage_leaves` is the same over leaves.
Metrics: n_units, n_scored (units with enough active images), frac_pure (of n_scored),
mean_height (over pure units), height_frac_h{h} (fraction of scored units whose LCH has height
h; the root counts as its own height), coverage_internal, coverage_leaves.
PCA directions are the principal axes of the training activations (as many as the site's
dimension); random directions are seeded standard-normal vectors (as many as the widest SAE).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from saeprobe.eval.features import (
    RAW,
    ModelSites,
    load_site,
    random_directions,
    sae_codes,
    site_layer,
)
from saeprobe.eval.semantics import TopImages, top_images
from saeprobe.hierarchy import Hierarchy

log = logging.getLogger(__name__)


def prune(hierarchy: Hierarchy, labels: Sequence[str]) -> Hierarchy:
    """The hierarchy restricted to the given leaf labels and their ancestors."""
    keep: set[str] = set()
    for label in set(labels):
        keep.update(hierarchy.ancestors(label))
    parents = {n: p for n, p in hierarchy.parents.items() if n in keep}
    return Hierarchy(parents, {n: hierarchy.names[n] for n in parents})


def lowest_common_hypernym(hierarchy: Hierarchy, labels: Sequence[str], tau: float) -> str:
    """The deepest node holding at least a fraction tau of `labels` in its subtree."""
    counts: Counter[str] = Counter()
    for label, n in Counter(labels).items():
        for node in hierarchy.ancestors(label):
            counts[node] += n
    need = tau * len(labels) - 1e-9
    eligible = [node for node, n in counts.items() if n >= need]
    return max(eligible, key=lambda node: (hierarchy.depth(node), counts[node], node))


def unit_hypernyms(
    hierarchy: Hierarchy, labels: np.ndarray, top: TopImages, tau: float, min_active: int
) -> list[str | None]:
    """The LCH of every unit (None for units with fewer than `min_active` valid top images)."""
    out: list[str | None] = []
    for j in range(top.indices.shape[0]):
        chosen = labels[top.indices[j][top.valid[j]]]
        out.append(
            lowest_common_hypernym(hierarchy, chosen.tolist(), tau)
            if len(chosen) >= max(min_active, 1)
            else None
        )
    return out


def ontology_metrics(hierarchy: Hierarchy, hypernyms: Sequence[str | None]) -> dict[str, float]:
    """The module's metrics from each unit's LCH (None = not scored)."""
    scored = [h for h in hypernyms if h is not None]
    pure = [h for h in scored if h != hierarchy.root]
    internal = [n for n in hierarchy.nodes if n != hierarchy.root and not hierarchy.is_leaf(n)]
    leaves = hierarchy.leaves()
    hit = set(pure)
    metrics = {
        "n_units": float(len(hypernyms)),
        "n_scored": float(len(scored)),
        "frac_pure": len(pure) / len(scored) if scored else float("nan"),
        "mean_height": float(np.mean([hierarchy.height(h) for h in pure]))
        if pure
        else float("nan"),
        "coverage_internal": (
            sum(n in hit for n in internal) / len(internal) if internal else float("nan")
        ),
        "coverage_leaves": sum(n in hit for n in leaves) / len(leaves),
    }
    heights = Counter(hierarchy.height(h) for h in scored)
    for h in range(hierarchy.height(hierarchy.root) + 1):
        metrics[f"height_frac_h{h}"] = heights.get(h, 0) / len(scored) if scored else float("nan")
    return metrics


def pca_directions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of x (n, d): (d, d) directions as columns, and the (d,) mean."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    mean = xt.mean(dim=0)
    _, _, vh = torch.linalg.svd(xt - mean, full_matrices=False)
    return vh.T.numpy(), mean.numpy()


# -- the task on a model's sites --


def ontology(
    sites: ModelSites,
    train_dataset: str,
    id_dataset: str,
    hierarchy: Hierarchy,
    top_n: int,
    tau: float,
    min_active: int,
    max_train: int | None,
    seed: int,
    device: torch.device,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ontology metrics (ontology module) per site and feature set, with the per-unit LCHs.

    Returns (metrics: model, layer, site, features, metric, value; units: model, site,
    features, latent, lch, lch_name, height).
    """
    metric_rows, unit_rows = [], []
    for site in sites.sites:
        data = load_site(sites.activation_dir(id_dataset), site)
        labels = data.labels
        pruned = prune(hierarchy, labels)
        raw = data.raw
        train_raw = load_site(sites.activation_dir(train_dataset), site, max_train, seed).raw
        saes = sites.load_saes(site, device)
        width = max((sae.width for sae in saes.values()), default=raw.shape[1])
        axes, mean = pca_directions(train_raw)
        sets: list[tuple[str, np.ndarray, bool]] = [
            (RAW, raw, False),
            ("pca", (raw - mean) @ axes, False),
            ("random", (raw - mean) @ random_directions(raw.shape[1], width, seed), False),
        ]
        sets += [(name, sae_codes(sae, data), True) for name, sae in saes.items()]
        for features, x, positive in sets:
            top = top_images(x, top_n, positive)
            lchs = unit_hypernyms(pruned, labels, top, tau, min_active)
            for metric, value in ontology_metrics(pruned, lchs).items():
                metric_rows.append(
                    {
                        "model": sites.model,
                        "layer": site_layer(site),
                        "site": site,
                        "features": features,
                        "metric": metric,
                        "value": value,
                    }
                )
            for latent, lch in enumerate(lchs):
                unit_rows.append(
                    {
                        "model": sites.model,
                        "site": site,
                        "features": features,
                        "latent": latent,
                        "lch": lch or "",
                        "lch_name": pruned.names[lch] if lch else "",
                        "height": pruned.height(lch) if lch else -1,
                    }
                )
    return pd.DataFrame(metric_rows), pd.DataFrame(unit_rows)
