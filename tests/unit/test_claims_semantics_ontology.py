"""The semantics and ontology claims on planted data: intact, broken and broken-control cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saeprobe.claims import FAILS, HOLDS, INCONCLUSIVE, judge
from saeprobe.eval.features import level_labels
from saeprobe.eval.ontology import ontology_evidence, tree_cuts, tree_r2
from saeprobe.eval.semantics import UNTRAINED, full_purity, semantics_evidence
from saeprobe.hierarchy import build_hierarchy

SUPERS = [("a", ["a1", "a2", "a3"]), ("b", ["b1", "b2", "b3"]), ("c", ["c1", "c2", "c3"])]
TREE = build_hierarchy(SUPERS)
LEAVES = TREE.leaves()


def planted(seed: int = 0, n: int = 1350, d: int = 64, superclass: float = 3.0):
    """Images of 9 leaves under 3 superclasses: raw (n, d) with leaf and superclass
    directions planted in noise; codes (n, 12) latents reading those directions; labels (n,)."""
    rng = np.random.default_rng(seed)
    leaf_of = np.arange(n) % len(LEAVES)
    sup_of = leaf_of // 3
    leaf_dirs = rng.standard_normal((9, d)) / np.sqrt(d) * 4.0
    sup_dirs = rng.standard_normal((3, d)) / np.sqrt(d)
    raw = leaf_dirs[leaf_of] + superclass * sup_dirs[sup_of] + rng.standard_normal((n, d))
    units = np.concatenate([leaf_dirs, sup_dirs])
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    proj = raw @ units.T
    codes = np.maximum(proj - np.quantile(proj, 0.8, axis=0), 0).astype(np.float32)
    labels = np.array(LEAVES)[leaf_of]
    return raw.astype(np.float32), codes, labels


def verdict(rows: list[dict]) -> str:
    return str(judge(pd.DataFrame(rows))["verdict"].iloc[0])


def sem_rows(raw, codes, labels, **kw) -> list[dict]:
    return semantics_evidence("s", raw, {"p": codes}, "p", labels, top_n=16, seed=0, **kw)


def onto_rows(raw, codes, labels, **kw) -> list[dict]:
    return ontology_evidence(
        "s", raw, {"p": codes}, "p", labels, TREE, 8, n_trees=200, max_units=4096, seed=0, **kw
    )


def test_full_purity_counts_only_units_with_all_top_images_active():
    labels = np.array(list("aabb"))
    x = np.array([[1, 1], [1, 0], [0, 0], [0, 0]], dtype=float)
    np.testing.assert_allclose(full_purity(x, labels, 2, positive_only=True), [1.0])


def test_semantics_planted_latents_hold():
    raw, codes, labels = planted()
    rows = sem_rows(raw, codes, labels)
    table = judge(pd.DataFrame(rows)).iloc[0]
    assert table["positive_pass"] and table["measured_pass"] and not table["negative_pass"]
    assert table["verdict"] == HOLDS


@pytest.mark.parametrize("broken", ["random_codes", "shuffled_labels"])
def test_semantics_broken_measurement_does_not_hold(broken):
    raw, codes, labels = planted()
    rng = np.random.default_rng(1)
    if broken == "random_codes":
        codes = np.maximum(rng.standard_normal(codes.shape) - 0.8, 0).astype(np.float32)
        assert verdict(sem_rows(raw, codes, labels)) != HOLDS
    else:
        perm = rng.permutation(len(labels))
        assert verdict(sem_rows(raw, codes[perm], labels)) != HOLDS


def test_semantics_broken_negative_is_inconclusive():
    raw, codes, labels = planted()
    assert verdict(sem_rows(raw, codes, labels, nuisance=labels)) == INCONCLUSIVE


def test_tree_r2_leaf_unit_is_the_same_on_every_tree():
    cuts = tree_cuts(TREE, LEAVES)
    assert len(cuts) == 1
    one_leaf = np.eye(9)[:1]
    rng = np.random.default_rng(0)
    values = {round(float(tree_r2(one_leaf, cuts, rng.permutation(9))[0]), 9) for _ in range(20)}
    assert values == {0.25}
    grouped = np.array([[1.0, 1, 1, 0, 0, 0, 0, 0, 0]])
    assert tree_r2(grouped, cuts, np.arange(9))[0] == pytest.approx(1.0)


def test_ontology_planted_superclass_latents_hold():
    raw, codes, labels = planted()
    table = judge(pd.DataFrame(onto_rows(raw, codes, labels))).iloc[0]
    assert table["positive_pass"] and table["measured_pass"] and not table["negative_pass"]
    assert table["verdict"] == HOLDS


@pytest.mark.parametrize("broken", ["random_codes", "no_superclass", "shuffled_labels"])
def test_ontology_broken_measurement_does_not_hold(broken):
    raw, codes, labels = planted(superclass=0.0 if broken == "no_superclass" else 3.0)
    rng = np.random.default_rng(2)
    if broken == "random_codes":
        codes = np.maximum(rng.standard_normal(codes.shape) - 0.8, 0).astype(np.float32)
    if broken == "shuffled_labels":
        codes = codes[rng.permutation(len(codes))]
    assert verdict(onto_rows(raw, codes, labels)) in (FAILS, INCONCLUSIVE)


def test_ontology_broken_negative_is_inconclusive():
    raw, codes, labels = planted()
    rows = onto_rows(raw, codes, labels, shuffled=np.arange(9))
    assert verdict(rows) == INCONCLUSIVE


def untrained_like(seed: int = 5, n: int = 1350, d: int = 64):
    """A model that learnt nothing: raw (n, d) noise, codes (n, 12) of random directions."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n, d)).astype(np.float32)
    proj = raw @ rng.standard_normal((d, 12))
    codes = np.maximum(proj - np.quantile(proj, 0.8, axis=0), 0).astype(np.float32)
    return raw, codes


def test_semantics_untrained_negative_fails_and_the_claim_holds():
    raw, codes, labels = planted()
    u_raw, u_codes = untrained_like()
    rows = sem_rows(raw, codes, labels, untrained=(u_raw, u_codes, labels))
    assert any(r["case"] == UNTRAINED for r in rows)
    assert verdict(rows) == HOLDS


def test_semantics_untrained_negative_runs_the_measured_code():
    raw, codes, labels = planted()
    rows = pd.DataFrame(sem_rows(raw, codes, labels, untrained=(raw, codes, labels)))
    measured = rows[rows["case"] == "measured"].set_index("statistic")["value"]
    untrained = rows[rows["case"] == UNTRAINED].set_index("statistic")["value"]
    pd.testing.assert_series_equal(measured, untrained, check_names=False)
    # a "control" that learnt as much as the model passes, so the site cannot hold
    assert verdict(rows.to_dict("records")) == INCONCLUSIVE


DEEP = build_hierarchy(SUPERS, supergroups=[("ab", ["a", "b"]), ("cc", ["c"])])


def test_supergroup_level_deepens_the_tree():
    assert DEEP.depth("shape:a1") == 3 and DEEP.height(DEEP.root) == 3
    assert DEEP.parent("super:a") == "group:ab" and DEEP.names["group:ab"] == "ab"
    assert DEEP.leaves() == LEAVES
    cuts = tree_cuts(DEEP, LEAVES)
    assert len(cuts) == 2 and [c.max() + 1 for c in cuts] == [2, 3]
    levels = level_labels(["shape:a1", "shape:c3"], DEEP)
    assert levels["depth1"].tolist() == ["group:ab", "group:cc"]
    assert levels["depth2"].tolist() == ["super:a", "super:c"]


def test_ontology_on_the_deeper_tree_holds_on_planted_latents():
    raw, codes, labels = planted()
    rows = ontology_evidence(
        "s", raw, {"p": codes}, "p", labels, DEEP, 8, n_trees=200, max_units=4096, seed=0
    )
    assert "2 cuts" in rows[0]["note"]
    assert verdict(rows) == HOLDS
