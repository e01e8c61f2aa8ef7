"""The ontology metric on a WordNet-shaped tree: a long root chain over ~100 leaf classes.

The old fraction of pure units (LCH below the root) saturates there for every feature set;
the fraction of units whose LCH is lower than the label-permutation null puts it does not.
"""

import itertools

import numpy as np
import pytest

from saeprobe.eval.ontology import HeightNull, feature_set_metrics, width_matched
from saeprobe.hierarchy import Hierarchy

CHAIN = ["entity", "physical_entity", "object", "whole", "living_thing"]


def wordnet_shaped(branching=(4, 5, 5)) -> Hierarchy:
    """CHAIN, then a balanced subtree under its last node (4 x 5 x 5 = 100 leaves)."""
    parents: dict[str, str | None] = {CHAIN[0]: None}
    parents.update({c: p for p, c in itertools.pairwise(CHAIN)})
    level = [CHAIN[-1]]
    for b in branching:
        below = []
        for node in level:
            for i in range(b):
                child = f"{node}.{i}" if node != CHAIN[-1] else f"n{i}"
                parents[child] = node
                below.append(child)
        level = below
    return Hierarchy(parents)


def feature_sets(tree: Hierarchy, labels: np.ndarray, d: int, seed: int):
    """SAE-like codes (4d latents, each firing on one WordNet subtree), raw neurons (each a
    superposition of three such features plus noise) and random directions of the raw space."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    nodes = [v for v in tree.nodes if tree.depth(v) >= len(CHAIN)]
    planted = rng.choice(nodes, 4 * d)
    member = np.stack([np.isin(labels, tree.leaves(v)) for v in planted], axis=1)
    sae = member * (1 + 0.3 * rng.random((n, 4 * d)))
    sae = np.where(rng.random(sae.shape) < 0.02, 0.3 * rng.random(sae.shape), sae)
    mix = np.zeros((4 * d, d))
    for j in range(d):
        mix[rng.choice(4 * d, 3, replace=False), j] = [1.0, 0.8, 0.6]
    raw = member @ mix + 0.15 * rng.standard_normal((n, d))
    w = rng.standard_normal((d, d))
    random = (raw - raw.mean(axis=0)) @ (w / np.linalg.norm(w, axis=0))
    return {"sae": (sae, True), "raw": (raw, False), "random": (random, False)}


@pytest.mark.parametrize("seed", [0, 1])
def test_specificity_tells_sae_units_from_raw_and_random_where_purity_saturates(seed) -> None:
    tree = wordnet_shaped()
    labels = np.repeat(np.array(tree.leaves()), 20)
    d = 32
    null = HeightNull(tree, labels, tau=0.9, draws=300, seed=seed)
    out = {}
    for name, (x, positive) in feature_sets(tree, labels, d, seed).items():
        out[name], *_ = feature_set_metrics(tree, labels, x, positive, 16, 0.9, 8, null, d, seed)
    for name in out:
        assert out[name]["frac_pure"] >= 0.95, name  # the old metric: a tie
        assert out[name]["n_matched"] == d  # width-matched: 32 of the 128 SAE latents
    assert out["sae"]["n_units"] == 4 * d
    assert out["sae"]["frac_specific"] >= 0.9
    for baseline in ("raw", "random"):
        assert out["sae"]["frac_specific"] > out[baseline]["frac_specific"] + 0.3, baseline
        assert out["sae"]["height_gain"] > out[baseline]["height_gain"] + 1.0, baseline


def test_specificity_says_no_when_the_labels_are_permuted() -> None:
    tree = wordnet_shaped()
    labels = np.repeat(np.array(tree.leaves()), 20)
    sae, _ = feature_sets(tree, labels, 32, 0)["sae"]
    shuffled = np.random.default_rng(5).permutation(labels)
    null = HeightNull(tree, shuffled, tau=0.9, draws=300, seed=0)
    metrics, *_ = feature_set_metrics(tree, shuffled, sae, True, 16, 0.9, 8, null, 32, 0)
    assert metrics["frac_pure"] >= 0.95  # still "pure": the root chain
    assert metrics["frac_specific"] <= 0.15
    assert abs(metrics["height_gain"]) < 0.5


def test_width_matching_samples_scored_units() -> None:
    scored = np.array([True, False] * 50)
    picked = width_matched(scored, 10, seed=0)
    assert len(picked) == 10 and scored[picked].all()
    assert (np.diff(picked) > 0).all()
    assert len(width_matched(scored, None, seed=0)) == 50
    assert len(width_matched(scored, 500, seed=0)) == 50
