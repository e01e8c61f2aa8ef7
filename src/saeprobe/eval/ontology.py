"""Task `ontology`: do SAE latents recover the model's ontology (the class hierarchy)?

Definitions, per unit (an SAE latent, a raw neuron, a PCA direction or a random direction of
the same site), over the in-distribution images and the hierarchy pruned to their labels:
- top images: the `top_n` images with the highest activation (projection for directions);
  SAE latents count only images where they are active (> 0) and need `min_active` of them.
- LCH (lowest common hypernym) at tolerance tau: the deepest hierarchy node whose subtree
  holds the labels of at least a fraction tau of the top images (tau = 1: the strict lowest
  common ancestor of all of them). Ties at equal depth go to the node holding more images.
- height: the LCH's height in the pruned hierarchy (0 = a leaf class).
- a unit is *pure* when its LCH is not the root. On WordNet this saturates: the ImageNet
  classes hang under a long chain (entity > physical entity > object > whole > ...), so the
  LCH of almost any set of images is below the root and every feature set is ~100% pure.
- *specific*: a unit whose LCH is lower than chance puts it. The null is a label permutation:
  the LCH height of as many images drawn at random from the labelled images (`null_draws`
  draws per number of valid top images); the unit's p is (1 + #{null height <= its height}) /
  (1 + null_draws), and it is specific when p <= alpha. The null knows the tree's shape and the
  class frequencies, so a deep root chain or an unbalanced tree moves it too.
- coverage: the fraction of internal non-root nodes of the pruned hierarchy that are the LCH of
  at least one pure unit (`coverage_internal`); `coverage_leaves` is the same over leaves.
Width matching: the metrics are taken over `n_matched` units, a seeded sample of each set's
scored units of the size of the raw width (the site's dimension; all of them when fewer), so a
16,384-latent SAE and 1,024 raw neurons are compared on equal numbers (coverage grows with the
count). n_units and n_scored count the whole set.
Metrics: n_units, n_scored (units with enough active images), n_matched, frac_specific,
height_gain (mean over matched units of the null's mean LCH height minus the unit's; 0 = like
chance, in tree levels), frac_pure (of matched), mean_height (over pure matched units),
height_frac_h{h} (fraction of matched units whose LCH has height h; the root counts as its own
height) beside null_height_frac_h{h} (the same for random sets of `top_n` images),
coverage_internal, coverage_leaves.
PCA directions are the principal axes of the training activations and random directions are
seeded standard-normal vectors, as many as the site's dimension.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows
from saeprobe.eval.features import (
    RAW,
    ModelSites,
    SaeCodes,
    SiteData,
    group_mean_directions,
    load_site,
    random_directions,
    sae_codes,
    site_layer,
)
from saeprobe.eval.semantics import TopImages, top_images
from saeprobe.hierarchy import Hierarchy
from saeprobe.stats import Estimate, null_estimate

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


def null_heights(
    hierarchy: Hierarchy, labels: np.ndarray, size: int, tau: float, draws: int, seed: int
) -> np.ndarray:
    """(draws,) LCH heights of `size` images drawn at random (without replacement) from the
    labelled images (n_images,): the label-permutation null of a unit with `size` top images."""
    rng = np.random.default_rng([int(seed), 6151, size])
    labels = np.asarray(labels)
    size = min(size, len(labels))
    return np.array(
        [
            hierarchy.height(
                lowest_common_hypernym(
                    hierarchy, labels[rng.choice(len(labels), size, replace=False)].tolist(), tau
                )
            )
            for _ in range(draws)
        ]
    )


class HeightNull:
    """The label-permutation null of LCH heights, drawn once per number of top images."""

    def __init__(
        self, hierarchy: Hierarchy, labels: np.ndarray, tau: float, draws: int, seed: int
    ) -> None:
        self.hierarchy, self.labels, self.tau = hierarchy, np.asarray(labels), tau
        self.draws, self.seed = draws, seed
        self._cache: dict[int, np.ndarray] = {}

    def heights(self, size: int) -> np.ndarray:
        """(draws,) null heights for units with `size` valid top images."""
        if size not in self._cache:
            self._cache[size] = null_heights(
                self.hierarchy, self.labels, size, self.tau, self.draws, self.seed
            )
        return self._cache[size]

    def p_value(self, height: int, size: int) -> float:
        """Chance of an LCH this low or lower: (1 + #{null <= height}) / (1 + draws)."""
        null = self.heights(size)
        return float((1 + (null <= height).sum()) / (1 + len(null)))


def width_matched(scored: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """(m,) sorted indices of a seeded sample of `count` of the `scored` (units,) bool units
    (all of them when count is None or there are fewer)."""
    units = np.flatnonzero(scored)
    if count is None or len(units) <= count:
        return units
    return np.sort(np.random.default_rng([int(seed), 6163]).choice(units, count, replace=False))


def ontology_metrics(
    hierarchy: Hierarchy,
    hypernyms: Sequence[str | None],
    sizes: Sequence[int] | None = None,
    null: HeightNull | None = None,
    top_n: int | None = None,
    alpha: float = 0.05,
) -> dict[str, float]:
    """The module's metrics from each unit's LCH (None = not scored), over the units given
    (the caller width-matches); sizes: each unit's number of valid top images, and `null`,
    give frac_specific, height_gain and null_height_frac_h{h} (for sets of top_n images)."""
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
    if null is not None and sizes is not None:
        pairs = [(hierarchy.height(h), int(m)) for h, m in zip(hypernyms, sizes, strict=True) if h]
        p = [null.p_value(h, m) for h, m in pairs]
        gain = [float(null.heights(m).mean()) - h for h, m in pairs]
        metrics["frac_specific"] = float(np.mean(np.array(p) <= alpha)) if p else float("nan")
        metrics["height_gain"] = float(np.mean(gain)) if gain else float("nan")
    heights = Counter(hierarchy.height(h) for h in scored)
    null_counts = Counter(null.heights(top_n).tolist()) if null and top_n else None
    for h in range(hierarchy.height(hierarchy.root) + 1):
        metrics[f"height_frac_h{h}"] = heights.get(h, 0) / len(scored) if scored else float("nan")
        if null_counts is not None:
            metrics[f"null_height_frac_h{h}"] = null_counts.get(h, 0) / null.draws
    return metrics


def feature_set_metrics(
    hierarchy: Hierarchy,
    labels: np.ndarray,
    x: np.ndarray,
    positive_only: bool,
    top_n: int,
    tau: float,
    min_active: int,
    null: HeightNull,
    width: int | None,
    seed: int,
    alpha: float = 0.05,
) -> tuple[dict[str, float], list[str | None], np.ndarray, np.ndarray]:
    """The metrics of one feature set x (n_images, units) over `width` matched units (None:
    all), with every unit's LCH (None: not scored), its number of valid top images (units,)
    and the matched units' indices (m,)."""
    top = top_images(x, top_n, positive_only)
    lchs = unit_hypernyms(hierarchy, labels, top, tau, min_active)
    sizes = top.valid.sum(axis=1)
    scored = np.array([h is not None for h in lchs])
    matched = width_matched(scored, width, seed)
    metrics = ontology_metrics(
        hierarchy, [lchs[j] for j in matched], sizes[matched], null, top_n, alpha
    )
    metrics["n_units"], metrics["n_scored"] = float(len(lchs)), float(scored.sum())
    metrics["n_matched"] = float(len(matched))
    return metrics, lchs, sizes, matched


def pca_directions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of x (n, d): (d, d) directions as columns, and the (d,) mean."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    mean = xt.mean(dim=0)
    _, _, vh = torch.linalg.svd(xt - mean, full_matrices=False)
    return vh.T.numpy(), mean.numpy()


# -- the task on a model's sites --


def unit_sets(
    sites: ModelSites,
    site: str,
    data: SiteData,
    axes: np.ndarray,
    mean: np.ndarray,
    width: int,
    seed: int,
    device: torch.device,
) -> Iterator[tuple[str, np.ndarray, bool]]:
    """(features, (n_images, units) float32, SAE codes?) for raw units, PCA directions (axes
    (d, d), mean (d,)), `width` random directions and every SAE, one matrix at a time."""
    raw = data.raw
    centred = raw - mean.astype(np.float32)
    yield RAW, raw, False
    yield "pca", centred @ axes.astype(np.float32), False
    yield "random", centred @ random_directions(raw.shape[1], width, seed).astype(np.float32), False
    for name in sites.sae_names:
        yield name, sae_codes(sites.load_sae(site, name, device), data), True


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
    null_draws: int = 1000,
    alpha: float = 0.05,
    width_match: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ontology metrics (ontology module) per site and feature set, with the per-unit LCHs.

    Returns (metrics: model, layer, site, features, metric, value; units: model, site,
    features, latent, lch, lch_name, height, p_specific, matched).
    """
    metric_rows, unit_rows = [], []
    for site in sites.sites:
        data = load_site(sites.activation_dir(id_dataset), site)
        labels = data.labels
        pruned = prune(hierarchy, labels)
        raw = data.raw
        train_raw = load_site(sites.activation_dir(train_dataset), site, max_train, seed).raw
        width = raw.shape[1]
        axes, mean = pca_directions(train_raw)
        del train_raw
        null = HeightNull(pruned, labels, tau, null_draws, seed)
        for features, x, positive in unit_sets(sites, site, data, axes, mean, width, seed, device):
            metrics, lchs, sizes, matched = feature_set_metrics(
                pruned, labels, x, positive, top_n, tau, min_active, null,
                width if width_match else None, seed, alpha,
            )  # fmt: skip
            del x
            in_match = np.zeros(len(lchs), bool)
            in_match[matched] = True
            for metric, value in metrics.items():
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
                        "p_specific": null.p_value(pruned.height(lch), int(sizes[latent]))
                        if lch
                        else float("nan"),
                        "matched": bool(in_match[latent]),
                    }
                )
    return pd.DataFrame(metric_rows), pd.DataFrame(unit_rows)


# -- evidence for the claim: tree-consistency of unit profiles against random trees --
#
# A unit's profile is its mean activation on each leaf class. Cutting the tree at depth c
# groups the leaves by their ancestor at that depth (leaves shallower than c stay alone); the
# unit's tree score is the fraction of its profile's variance across leaves explained by
# those groups, averaged over the cuts that group anything (the world's tree: one cut, the
# superclasses). `ontology_score` is the mean over units. A unit for one leaf scores the same
# on every tree of a shape, so leaf-pure units neither earn nor cost anything, and the score
# does not saturate: on random trees it sits near (groups - 1) / (leaves - 1). The null
# permutes the leaves over the tree (random trees of the same shape).


def leaf_profiles(x: np.ndarray, labels: np.ndarray, leaves: Sequence[str]) -> np.ndarray:
    """Mean of x (n_images, units) over the images of each leaf: (units, len(leaves))."""
    labels = np.asarray(labels).astype(str)
    return np.stack([x[labels == leaf].mean(axis=0) for leaf in leaves], axis=1)


def tree_cuts(hierarchy: Hierarchy, leaves: Sequence[str]) -> list[np.ndarray]:
    """Per depth cut that groups some leaves, each leaf's group id: [(len(leaves),) int]."""
    paths = [hierarchy.ancestors(leaf)[::-1] for leaf in leaves]
    cuts = []
    for depth in range(1, max(len(p) for p in paths) - 1):
        keys = [p[depth] if depth < len(p) - 1 else p[-1] for p in paths]
        _, groups = np.unique(keys, return_inverse=True)
        if 1 < groups.max() + 1 < len(leaves):
            cuts.append(groups)
    return cuts


def tree_r2(profiles: np.ndarray, cuts: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Each unit's variance fraction explained by the cuts, leaf i placed at tree leaf
    order[i]: profiles (units, leaves) -> (units,) (NaN for flat profiles)."""
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    total = (centred**2).sum(axis=1)
    out = np.zeros(len(profiles))
    for groups in cuts:
        g = groups[order]
        sums = np.zeros((len(profiles), g.max() + 1))
        np.add.at(sums.T, g, centred.T)
        out += (sums**2 / np.bincount(g)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 1e-12, out / max(len(cuts), 1) / total, np.nan)


def ontology_estimate(
    profiles: np.ndarray, cuts: Sequence[np.ndarray], order: np.ndarray, n_trees: int, seed: int
) -> Estimate:
    """Mean tree score of the units with the leaves at `order`, against `n_trees` random
    trees of the same shape (the leaves permuted): the null's band and permutation p."""
    keep = np.isfinite(tree_r2(profiles, cuts, np.arange(profiles.shape[1])))
    profiles = profiles[keep]
    if not len(profiles) or not cuts:
        return Estimate(float("nan"))
    rng = np.random.default_rng([int(seed), 1217])
    null = [
        float(np.mean(tree_r2(profiles, cuts, rng.permutation(len(order))))) for _ in range(n_trees)
    ]
    return null_estimate(float(np.mean(tree_r2(profiles, cuts, order))), np.array(null))


def scored_units(x: np.ndarray, positive_only: bool, min_active: int) -> np.ndarray:
    """Units of x (n_images, units) that count: SAE latents active on >= min_active images."""
    return (x > 0).sum(axis=0) >= min_active if positive_only else np.ones(x.shape[1], bool)


def ontology_evidence(
    site: str,
    raw: np.ndarray,
    codes: Mapping[str, np.ndarray],
    primary: str,
    labels: np.ndarray,
    hierarchy: Hierarchy,
    min_active: int,
    n_trees: int,
    max_units: int,
    seed: int,
    shuffled: np.ndarray | None = None,
) -> list[dict]:
    """Evidence rows of the `ontology` claim at one site (the section comment above).

    raw: (n_images, d); codes: SAE name -> (n_images, width); labels: (n_images,) leaf
    labels; hierarchy: pruned to the labels. measured: the primary SAE's latents; positive:
    the class-mean directions of the tree's internal nodes (leaf directions would only add
    noise: a leaf's unit scores alike on every tree of the shape); negative: the primary SAE
    against one fixed shuffled tree (leaf i at tree leaf shuffled[i]; default a seeded
    permutation), with the same null; sensitivity: the other SAEs. At most
    `max_units` units (a seeded subset) enter each set.
    """
    leaves = hierarchy.leaves()
    cuts = tree_cuts(hierarchy, leaves)
    identity = np.arange(len(leaves))
    rng = np.random.default_rng([int(seed), 3301])
    shuffled = rng.permutation(len(leaves)) if shuffled is None else np.asarray(shuffled)

    def profiles(x: np.ndarray, positive: bool) -> np.ndarray:
        keep = np.flatnonzero(scored_units(x, positive, min_active))
        if len(keep) > max_units:
            keep = np.sort(rng.choice(keep, max_units, replace=False))
        return leaf_profiles(x[:, keep], labels, leaves)

    labels = np.asarray(labels).astype(str)
    nodes = [n for n in hierarchy.nodes if n != hierarchy.root and not hierarchy.is_leaf(n)]
    groups = [np.isin(labels, hierarchy.leaves(n)) for n in nodes]
    directions = group_mean_directions(raw, groups)
    sae = profiles(codes[primary], True)
    note = f"{len(cuts)} cuts, {len(leaves)} leaves, {n_trees} random trees"

    def rows(case: str, p: np.ndarray, order: np.ndarray, what: str) -> list[dict]:
        est = ontology_estimate(p, cuts, order, n_trees, seed)
        return evidence_rows("ontology", site, case, {"ontology_score": est}, f"{what}; {note}")

    out = rows(MEASURED, sae, identity, f"primary SAE, {len(sae)} units")
    out += rows(
        POSITIVE,
        profiles((raw - raw.mean(axis=0)) @ directions, False),
        identity,
        f"class-mean directions of {len(nodes)} internal nodes",
    )
    out += rows(NEGATIVE, sae, shuffled, "primary SAE against a shuffled tree")
    for name, x in codes.items():
        if name != primary:
            out += rows(SENSITIVITY + name, profiles(x, True), identity, name)
    return out


def ontology_claim(
    sites: ModelSites,
    id_dataset: str,
    hierarchy: Hierarchy,
    primary: str,
    settings: Mapping,
    seed: int,
    device: torch.device,
) -> list[dict]:
    """Evidence rows of the `ontology` claim at every site of a model (`ontology_evidence`);
    settings: min_active, null_trees, max_units."""
    out = []
    for site in sites.sites:
        data = load_site(sites.activation_dir(id_dataset), site)
        codes = SaeCodes(sites, site, data, device)
        out += ontology_evidence(
            site,
            data.raw,
            codes,
            primary,
            data.labels,
            prune(hierarchy, data.labels),
            settings["min_active"],
            settings.get("null_trees", 200),
            settings.get("max_units", 4096),
            seed,
        )
    return out
