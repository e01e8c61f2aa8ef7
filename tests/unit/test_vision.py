"""The vision tasks' definitions on constructed data where the answer is known."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saeprobe.data.download import DownloadError, ensure
from saeprobe.data.wordnet import read_wordnet
from saeprobe.eval.features import SiteData, level_labels
from saeprobe.eval.ontology import (
    lowest_common_hypernym,
    ontology_metrics,
    pca_directions,
    prune,
    random_directions,
    unit_hypernyms,
)
from saeprobe.eval.ood_detection import (
    KNNScore,
    MahalanobisScore,
    ProfileScore,
    auroc,
    fpr_at_95_tpr,
    head_scores,
)
from saeprobe.eval.probes import fit_probe, rank_features
from saeprobe.eval.semantics import grid_latents, name_units, purity, top_images, unit_table
from saeprobe.hierarchy import Hierarchy

TREE = Hierarchy(
    {
        "root": None,
        "animal": "root",
        "dog": "animal",
        "cat": "animal",
        "vehicle": "root",
        "car": "vehicle",
        "bus": "vehicle",
        "plane": "vehicle",
    }
)


# -- features --------------------------------------------------------------------------------


def test_level_labels_give_ancestors_per_depth() -> None:
    levels = level_labels(["dog", "bus", "cat"], TREE)
    assert list(levels["depth1"]) == ["animal", "vehicle", "animal"]
    assert list(levels["depth2"]) == ["dog", "bus", "cat"]
    assert list(levels["leaf"]) == ["dog", "bus", "cat"]
    with pytest.raises(KeyError, match="horse"):
        level_labels(["horse"], TREE)


def test_multi_token_sites_average_per_image() -> None:
    images = pd.DataFrame({"index": [0, 1], "label": ["dog", "cat"]})
    tokens = np.array([[1.0], [3.0], [10.0], [20.0], [30.0]], dtype=np.float32)
    data = SiteData(tokens=tokens, image_of_row=np.array([0, 0, 1, 1, 1]), images=images)
    np.testing.assert_allclose(data.raw[:, 0], [2.0, 20.0])


# -- semantics -------------------------------------------------------------------------------


def _planted(n_per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels dog/cat/car/bus; unit 0 fires on dogs, unit 1 on vehicles, unit 2 on noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["dog", "cat", "car", "bus"], n_per_class)
    x = np.zeros((len(labels), 3), dtype=np.float32)
    x[labels == "dog", 0] = rng.uniform(1, 2, n_per_class)
    x[np.isin(labels, ["car", "bus"]), 1] = rng.uniform(1, 2, 2 * n_per_class)
    x[:, 2] = rng.uniform(0, 1, len(labels))
    return x, labels


def test_purity_finds_the_planted_units() -> None:
    x, labels = _planted()
    top = top_images(x, top_n=10, positive_only=True)
    leaf, modal = purity(labels, top, min_active=5)
    assert leaf[0] == 1.0 and modal[0] == "dog"
    assert leaf[1] < 1.0  # cars and buses mixed at the leaf level
    parent, modal_parent = purity(level_labels(labels, TREE)["depth1"], top, min_active=5)
    assert parent[1] == 1.0 and modal_parent[1] == "vehicle"
    assert leaf[2] < 0.8


def test_rare_latents_get_no_purity() -> None:
    x = np.zeros((30, 1), dtype=np.float32)
    x[:3, 0] = 1.0
    top = top_images(x, top_n=10, positive_only=True)
    assert top.valid.sum() == 3
    assert np.isnan(purity(np.array(["dog"] * 30), top, min_active=5)[0][0])


def test_naming_picks_the_concept_of_the_top_images() -> None:
    x, labels = _planted()
    concepts = ["dog", "cat", "vehicle"]
    text = np.eye(3)
    images = np.stack(
        [text[0] if lab == "dog" else text[1] if lab == "cat" else text[2] for lab in labels]
    )
    images = images + 0.05 * np.random.default_rng(1).standard_normal(images.shape)
    top = top_images(x, top_n=10, positive_only=True)
    names, scores = name_units(top, images, text, concepts, min_active=5)
    assert names[0] == "dog" and names[1] == "vehicle"
    assert scores[0] > 0.5


def test_unit_table_and_grid_choice() -> None:
    x, labels = _planted()
    levels = level_labels(labels, TREE)
    table = unit_table(
        x, levels, TREE.names, top_n=10, min_active=5, positive_only=True, naming=None
    )
    assert {"latent", "frequency", "purity", "top_label", "name", "name_score"} <= set(
        table.columns
    )
    assert table.loc[0, "top_label"] == "dog" and table.loc[0, "frequency"] == pytest.approx(0.25)
    assert grid_latents(table, 1) == [0]


# -- ood_detection ---------------------------------------------------------------------------


def test_auroc_and_fpr95_on_known_scores() -> None:
    id_scores = np.arange(100, dtype=float)
    assert auroc(id_scores, id_scores + 1000) == 1.0
    assert fpr_at_95_tpr(id_scores, id_scores + 1000) == 0.0
    assert auroc(id_scores, id_scores) == pytest.approx(0.5)
    assert fpr_at_95_tpr(id_scores, id_scores) == pytest.approx(0.96)


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    bank, query = rng.standard_normal((50, 4)), rng.standard_normal((7, 4))
    nb = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    nq = query / np.linalg.norm(query, axis=1, keepdims=True)
    dist = np.linalg.norm(nq[:, None] - nb[None], axis=2)
    expected = np.sort(dist, axis=1)[:, 2]
    np.testing.assert_allclose(KNNScore(bank, k=3, chunk=3)(query), expected, rtol=1e-4)


def test_mahalanobis_matches_the_formula() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    x = rng.standard_normal((400, 3)) * [1.0, 2.0, 0.5] + np.where(y[:, None] == 1, 3.0, 0.0)
    score = MahalanobisScore(x, y, 2, ridge=0.0)
    means = np.stack([x[y == c].mean(0) for c in (0, 1)])
    centred = x - means[y]
    precision = np.linalg.inv(centred.T @ centred / (len(x) - 1))
    q = rng.standard_normal((5, 3))
    expected = np.min([np.einsum("nd,de,ne->n", q - m, precision, q - m) for m in means], axis=0)
    np.testing.assert_allclose(score(q, chunk=2), expected, rtol=1e-6)


def test_scores_separate_a_shifted_cluster() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)
    centres = rng.standard_normal((4, 8)) * 4
    train = centres[y] + rng.standard_normal((400, 8))
    test = centres[y] + rng.standard_normal((400, 8))
    # between two classes: ambiguous for the head, far from both clusters' samples
    ood = (centres[0] + centres[1]) / 2 + rng.standard_normal((200, 8)) * 0.5
    probe = fit_probe(train, y, 4, [1e-3], 0.1, seed=0)
    for name, fn in {
        **{k: partial(lambda k, x: head_scores(probe, x)[k], k) for k in ("msp", "energy")},
        "mahalanobis": MahalanobisScore(train, y, 4),
        "knn": KNNScore(train, 5),
    }.items():
        assert auroc(fn(test), fn(ood)) > 0.9, name
    codes_train = np.maximum(train, 0)
    profile = ProfileScore(codes_train, y, 4)
    assert auroc(profile(np.maximum(test, 0)), profile(np.maximum(ood, 0))) > 0.7


# -- probes ----------------------------------------------------------------------------------


def test_probe_learns_and_masks_classes() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    x = np.eye(3)[y] * 3 + rng.standard_normal((180, 3)) * 0.3
    probe = fit_probe(x, y, 3, [1e-4, 1e-2, 1.0], 0.2, seed=0)
    assert np.mean(probe.predict(x) == y) > 0.95
    assert set(probe.predict(x, classes=np.array([1, 2]))) <= {1, 2}
    assert probe.weight_decay in (1e-4, 1e-2, 1.0)


def test_rank_features_puts_the_informative_one_first() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    x = rng.standard_normal((100, 5))
    x[:, 3] += 4 * y
    x[:, 1] = 0.0
    ranking = rank_features(x, y)
    assert ranking[0] == 3 and ranking[-1] == 1


# -- ontology --------------------------------------------------------------------------------


def test_lch_with_tolerance() -> None:
    assert lowest_common_hypernym(TREE, ["dog"] * 5, 1.0) == "dog"
    assert lowest_common_hypernym(TREE, ["dog", "cat"], 1.0) == "animal"
    assert lowest_common_hypernym(TREE, ["dog", "car"], 1.0) == "root"
    assert lowest_common_hypernym(TREE, ["dog"] * 9 + ["car"], 0.9) == "dog"
    assert lowest_common_hypernym(TREE, ["dog"] * 9 + ["car"], 1.0) == "root"


def test_ontology_metrics_and_pruning() -> None:
    pruned = prune(TREE, ["dog", "cat", "car", "bus"])
    assert "plane" not in pruned and pruned.height("root") == 2
    metrics = ontology_metrics(pruned, ["dog", "animal", "root", None])
    assert metrics["n_units"] == 4 and metrics["n_scored"] == 3
    assert metrics["frac_pure"] == pytest.approx(2 / 3)
    assert metrics["coverage_internal"] == 0.5  # animal, not vehicle
    assert metrics["coverage_leaves"] == 0.25
    assert metrics["mean_height"] == 0.5
    assert metrics["height_frac_h2"] == pytest.approx(1 / 3)


def test_planted_units_have_the_right_hypernyms() -> None:
    x, labels = _planted()
    top = top_images(x, top_n=10, positive_only=True)
    assert unit_hypernyms(TREE, labels, top, tau=1.0, min_active=5)[:2] == ["dog", "vehicle"]


def test_pca_and_random_directions() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3)) * [5.0, 1.0, 0.1]
    axes, mean = pca_directions(x)
    assert abs(axes[0, 0]) > 0.99 and mean.shape == (3,)
    r = random_directions(3, 7, seed=0)
    assert r.shape == (3, 7)
    np.testing.assert_allclose(np.linalg.norm(r, axis=0), 1.0)
    np.testing.assert_array_equal(r, random_directions(3, 7, seed=0))


# -- data: WordNet, downloads ----------------------------------------------------------------


def test_wordnet_keeps_the_deepest_hypernym_whatever_the_file_order(tmp_path: Path) -> None:
    # n01 (dog) has two hypernyms: n00002000 (animal, under n00004000) and n00003000 (thing,
    # right under entity); the deeper one wins in either file order
    lines = [
        "n00001740 n00004000",
        "n00004000 n00002000",
        "n00003000 n01",
        "n00002000 n01",
        "n00001740 n00003000",
        "n00003000 n02",
    ]
    (tmp_path / "words.txt").write_text(
        "n00001740\tentity\nn00002000\tanimal, beast\nn00003000\tthing\nn00004000\torganism\n"
        "n01\tdog\nn02\tcar\n"
    )
    trees = []
    for order in (lines, lines[::-1]):
        (tmp_path / "is_a.txt").write_text("\n".join(order) + "\n")
        trees.append(read_wordnet(tmp_path / "is_a.txt", tmp_path / "words.txt"))
    tree = trees[0]
    assert trees[1] == tree
    assert tree.parent("n01") == "n00002000"
    assert tree.names["n00002000"] == "animal"
    assert tree.lowest_common_ancestor(["n01", "n02"]) == "n00001740"


def test_wordnet_ties_go_to_the_smallest_wnid_and_cycles_are_errors(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("n00001740\tentity\n")
    (tmp_path / "is_a.txt").write_text(
        "n00001740 n00009\nn00001740 n00005\nn00009 n01\nn00005 n01\n"
    )
    assert read_wordnet(tmp_path / "is_a.txt", tmp_path / "words.txt").parent("n01") == "n00005"
    (tmp_path / "is_a.txt").write_text("n00001740 n00005\nn00007 n00008\nn00008 n00007\n")
    with pytest.raises(ValueError, match="cycle"):
        read_wordnet(tmp_path / "is_a.txt", tmp_path / "words.txt")


@pytest.fixture
def server(tmp_path: Path):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_ensure_downloads_checks_and_records(server, tmp_path: Path) -> None:
    root, url = server
    payload = b"n00001740\tentity\n" * 1000
    (root / "words.txt").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "words.txt"
    assert ensure(f"{url}/words.txt", dest, digest).read_bytes() == payload
    assert dest.with_name("words.txt.sha256").read_text().split()[0] == digest
    # a stale partial download is replaced (this server ignores Range) and the file is kept
    dest.unlink()
    dest.with_name("words.txt.part").write_bytes(b"garbage")
    assert ensure(f"{url}/words.txt", dest, None).read_bytes() == payload
    with pytest.raises(DownloadError, match="checksum mismatch"):
        ensure(f"{url}/words.txt", tmp_path / "other.txt", "0" * 64)
    assert not (tmp_path / "other.txt").exists()
    with pytest.raises(DownloadError, match=r"missing\.txt"):
        ensure(f"{url}/missing.txt", tmp_path / "missing.txt", None)
