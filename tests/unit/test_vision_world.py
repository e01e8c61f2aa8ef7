"""Ground truth: on activations with the synthetic world's structure planted in them, every
vision task finds it (held-out shapes, the superclass > shape hierarchy, colours).

Each image of a world-like label table (the world's shapes, superclasses, held-out shapes,
colours, backgrounds) gets x = 2 e_super + 2 e_shape + 1.5 e_colour + e_background + noise
with seeded random unit vectors e; held-out shapes have vectors never seen in training. The
default run shows the same tasks on the real world CLIP (see the report).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saeprobe.eval.features import ModelSites
from saeprobe.eval.ontology import ontology
from saeprobe.eval.ood_detection import latent_contributions, ood_detection
from saeprobe.eval.ood_generalization import SpuriousSettings, ood_generalization
from saeprobe.eval.semantics import Namer, semantics
from saeprobe.hierarchy import build_hierarchy
from saeprobe.sae import SAEConfig, TrainConfig, train_sweep
from saeprobe.world.config import WorldConfig

D = 48
SITE = "pooled"
CPU = torch.device("cpu")
SPLITS = {"train": (4000, False, 0.3), "test": (800, False, 0.3), "ood_shape": (400, True, 0.3)}
SPLITS["shift_noise"] = (400, False, 0.9)


def _unit(rng: np.random.Generator, names: list[str]) -> dict[str, np.ndarray]:
    v = rng.standard_normal((len(names), D))
    return dict(zip(names, v / np.linalg.norm(v, axis=1, keepdims=True), strict=True))


def _write_store(root: Path, x: np.ndarray, images: pd.DataFrame) -> None:
    """A one-shard activation store in the layout saeprobe.activations writes."""
    site = root / SITE
    site.mkdir(parents=True)
    np.save(site / "shard_00000.npy", x.astype(np.float32))
    np.save(site / "example.npy", images["index"].to_numpy(dtype=np.int64))
    meta = {
        "dim": D,
        "dtype": "float32",
        "site": SITE,
        "layer": None,
        "count": len(x),
        "mean": x.mean(axis=0).tolist(),
        "shards": [{"file": "shard_00000.npy", "rows": len(x)}],
        "columns": ["example"],
    }
    (site / "metadata.json").write_text(json.dumps(meta))
    images.to_csv(root / "examples.csv", index=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("planted")
    cfg = WorldConfig()
    hierarchy = build_hierarchy(cfg.superclasses)
    superclass_of = {s: sup for sup, members in cfg.superclasses for s in members}
    rng = np.random.default_rng(0)
    vectors = {
        **_unit(rng, [f"super:{sup}" for sup, _ in cfg.superclasses]),
        **_unit(rng, [f"shape:{s}" for s in cfg.shapes]),
        **_unit(rng, list(cfg.colours)),
        **_unit(rng, list(cfg.backgrounds)),
    }
    for split, (n, heldout, noise) in SPLITS.items():
        shapes = list(cfg.heldout_shapes if heldout else cfg.train_shapes)
        table = pd.DataFrame(
            {
                "index": np.arange(n),
                "shape": rng.choice(shapes, n),
                "colour": rng.choice(cfg.colours, n),
                "background": rng.choice(cfg.backgrounds, n),
            }
        )
        table["superclass"] = table["shape"].map(superclass_of)
        table["label"] = "shape:" + table["shape"]
        x = np.stack(
            [
                2 * vectors[f"super:{r.superclass}"]
                + 2 * vectors[r.label]
                + 1.5 * vectors[r.colour]
                + vectors[r.background]
                for r in table.itertuples()
            ]
        )
        x += noise * rng.standard_normal(x.shape) / np.sqrt(D)
        _write_store(root / "activations" / "m" / f"world_{split}", x, table)
    train = np.load(root / "activations/m/world_train" / SITE / "shard_00000.npy")
    train_sweep(
        train,
        [SAEConfig(arch="topk", width=64, k=4)],
        TrainConfig(batch_size=128, epochs=10, lr=2e-3, warmup_steps=10, checkpoint_every=0),
        [root / "saes" / "m" / SITE / "topk"],
        device="cpu",
        progress=False,
    )
    concepts = [hierarchy.names[n] for n in vectors if n in hierarchy.names]
    concepts += [c for c in vectors if c not in hierarchy.names]
    test = pd.read_csv(root / "activations/m/world_test/examples.csv")
    x_test = np.load(root / "activations/m/world_test" / SITE / "shard_00000.npy")
    namer = Namer(
        image_embeddings=pd.DataFrame(x_test, index=test["index"].to_numpy()),
        text_embeddings=np.stack(list(vectors.values())),
        concepts=concepts,
    )
    sites = ModelSites("m", [SITE], ["topk"], root / "activations", root / "saes")
    return {"sites": sites, "hierarchy": hierarchy, "namer": namer, "cfg": cfg}


def test_heldout_shapes_are_detected_well_above_chance(world: dict) -> None:
    table, scores, _ = ood_detection(
        world["sites"], "world_train", "world_test", ["world_ood_shape"], knn_k=10,
        max_train=None, weight_decays=[1e-3], val_fraction=0.1, seed=0, device=CPU,
    )  # fmt: skip
    auroc = table.set_index(["features", "score"])["auroc"]
    assert auroc["raw", "knn"] > 0.8 and auroc["raw", "mahalanobis"] > 0.8
    assert auroc["topk", "recon_error"] > 0.8 and auroc["topk", "knn"] > 0.8
    # the latents' contributions add up to the activation-mass score's shift from ID to OOD
    latents = latent_contributions(world["sites"], "world_test", "world_ood_shape", CPU)
    assert len(latents) == 64 and set(latents["sae"]) == {f"m/{SITE}/topk"}
    mass = scores[SITE][("topk", "activation_mass")]
    shift = mass["world_ood_shape"].mean() - mass["world_test"].mean()
    assert latents["contribution"].sum() == pytest.approx(shift, rel=1e-4)
    assert latents["contribution"].abs().max() > 0


def test_superclass_shape_and_colour_latents_appear_and_are_named(world: dict) -> None:
    table = semantics(
        world["sites"], "world_test", world["hierarchy"], ["colour"], world["namer"],
        top_n=16, min_active=8, device=CPU,
    )  # fmt: skip
    latents = table[(table["features"] == "topk") & (table["name"] != "")]
    shape_latents = latents[latents["purity_leaf"] >= 0.9]
    superclass_latents = latents[(latents["purity_depth1"] >= 0.9) & (latents["purity_leaf"] < 0.9)]
    colour_latents = latents[latents["purity_colour"] >= 0.9]
    assert len(shape_latents) >= 3 and len(superclass_latents) >= 1 and len(colour_latents) >= 3
    # a latent pure in one shape (colour) is named after that shape (colour) most of the time
    assert (shape_latents["name"] == shape_latents["top_label"]).mean() > 0.6
    colours = set(world["cfg"].colours)
    named_colour = latents[latents["name"].isin(colours)]
    assert len(named_colour) >= 3 and (named_colour["purity_colour"] >= 0.9).mean() > 0.6


def test_ontology_beats_random_directions(world: dict) -> None:
    metrics, units = ontology(
        world["sites"], "world_train", "world_test", world["hierarchy"], top_n=16, tau=0.9,
        min_active=8, max_train=None, seed=0, device=CPU,
    )  # fmt: skip
    value = metrics.set_index(["features", "metric"])["value"]
    assert value["topk", "coverage_internal"] == 1.0  # every superclass is some latent's LCH
    assert value["topk", "coverage_leaves"] > value["pca", "coverage_leaves"]
    # SAE latents sit lower in the tree than chance (and than PCA axes) puts them
    assert value["topk", "frac_specific"] > value["pca", "frac_specific"] + 0.3
    assert value["topk", "height_gain"] > value["pca", "height_gain"] + 0.5
    assert value["topk", "frac_pure"] > value["pca", "frac_pure"]
    # width-matched: every set is taken over at most as many units as the raw width
    width = value["raw", "n_units"]
    for features in ("raw", "pca", "random", "topk"):
        expected = min(value[features, "n_scored"], width)
        assert value[features, "n_matched"] == expected, features
    assert value["random", "n_units"] == width
    assert ("topk", "null_height_frac_h0") in value.index
    assert set(units["features"]) == {"raw", "pca", "random", "topk"}


def test_probes_generalise_to_the_noisy_shift(world: dict) -> None:
    table, evidence, latents = ood_generalization(
        world["sites"], "world_train", ["world_test", "world_shift_noise"], top_k=[4],
        max_train=None, weight_decays=[1e-3], val_fraction=0.1, mask_to_present=True, seed=0,
        device=CPU, shifted=["world_shift_noise"], primary="topk", spurious=SpuriousSettings(),
        control_dataset="world_test", naming_levels=["colour", "background"],
    )  # fmt: skip
    cases = pd.DataFrame(evidence).set_index(["case", "statistic"])["value"]
    assert np.isfinite(cases["measured", "accuracy_gain"])
    assert np.isfinite(cases["measured", "sae_removal_gain"])  # reported, not judged
    assert np.isfinite(cases["positive", "accuracy_gain"])  # the planted units were named
    assert cases["positive", "accuracy_gain"] > cases["negative", "accuracy_gain"]
    views = table.groupby("view")["features"].agg(set)
    assert views["spurious"] == {"raw", "topk", "topk -colour"}
    assert views["planted"] == {"raw+planted", "raw+planted -colour", "raw+planted -random"}
    # per latent: the all-unit probe's weight norm, for each of the SAE's 64 latents
    assert len(latents) == 64 and (latents["weight"] >= 0).all()
    assert latents["weight"].max() > 2 * latents["weight"].median()
    acc = table.set_index(["features", "k", "test_dataset"])["accuracy"]
    assert acc["raw", "all", "world_test"] > 0.95 and acc["topk", "all", "world_test"] > 0.9
    assert acc["topk", "all", "world_shift_noise"] > 0.5  # chance: 1/9
    assert acc["topk", "4", "world_test"] > 2 / 9
