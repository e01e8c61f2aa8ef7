"""The four vision tasks for one model: load its sites and SAEs, compute each task's rows.

A *feature set* of a site is the raw activations ("raw") or the codes of one SAE (its sweep
name); every task compares them. Task definitions live in the task modules (semantics,
ood_detection, probes, ontology).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.eval import ontology as onto
from saeprobe.eval.features import (
    SiteData,
    level_labels,
    load_site,
    reconstruction_error,
    sae_codes,
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
from saeprobe.eval.semantics import top_images, unit_table
from saeprobe.hierarchy import Hierarchy
from saeprobe.sae.io import load_sae
from saeprobe.sae.models import SAE

log = logging.getLogger(__name__)

RAW = "raw"


@dataclass
class ModelSites:
    """Where one model's activations and SAEs are: activations/{model}/{dataset}/{site} and
    saes/{model}/{site}/{name}."""

    model: str
    sites: list[str]
    sae_names: list[str]
    activations: Path
    saes: Path

    def activation_dir(self, dataset: str) -> Path:
        return self.activations / self.model / dataset

    def load_saes(self, site: str, device: torch.device) -> dict[str, SAE]:
        out = {}
        for name in self.sae_names:
            sae = load_sae(self.saes / self.model / site / name, device=device)
            sae.eval()
            out[name] = sae
        return out

    def sae_id(self, site: str, features: str) -> str:
        return f"{self.model}/{site}/{features}"


def class_ids(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(label, -1) for label in labels], dtype=np.int64)


def site_layer(site: str) -> str:
    """`L11_cls` -> "11"; `pooled` -> "pooled"."""
    return site[1:].split("_")[0] if site.startswith("L") else site


# -- semantics -------------------------------------------------------------------------------


@dataclass
class Namer:
    """Zero-shot naming inputs: image embeddings of the in-distribution images (by dataset
    index) from the namer model, and text embeddings of the concept vocabulary."""

    image_embeddings: pd.DataFrame
    text_embeddings: np.ndarray
    concepts: list[str]

    def for_images(self, index: np.ndarray) -> np.ndarray:
        return self.image_embeddings.loc[index].to_numpy(dtype=np.float32)


def concept_vocabulary(
    hierarchy: Hierarchy, images: pd.DataFrame, attributes: Sequence[str], extra: Sequence[str]
) -> list[str]:
    """Hierarchy node names (not the root), attribute values and extra words, deduplicated."""
    words = [hierarchy.names[n] for n in hierarchy.nodes if n != hierarchy.root]
    for column in attributes:
        words += sorted(images[column].astype(str).unique())
    words += list(extra)
    return list(dict.fromkeys(w for w in words if w))


def build_namer(
    model_spec: Mapping,
    activation_dir: Path,
    concepts: list[str],
    prompt: str,
    device: torch.device,
) -> Namer:
    """Embed the vocabulary with the model's text tower; read its pooled image embeddings."""
    from saeprobe.backbones.openclip import load_open_clip_model

    model, tokenizer = load_open_clip_model(model_spec, device)
    with torch.no_grad():
        tokens = tokenizer([prompt.format(c) for c in concepts]).to(device)
        texts = model.encode_text(tokens).float().cpu().numpy()
    pooled = load_site(activation_dir, "pooled")
    frame = pd.DataFrame(pooled.raw, index=pooled.images["index"].to_numpy())
    return Namer(image_embeddings=frame, text_embeddings=texts, concepts=concepts)


def semantics(
    sites: ModelSites,
    id_dataset: str,
    hierarchy: Hierarchy,
    attributes: Sequence[str],
    namer: Namer | None,
    top_n: int,
    min_active: int,
    device: torch.device,
) -> pd.DataFrame:
    """One row per unit of every feature set of every site (semantics module's columns)."""
    frames = []
    for site in sites.sites:
        data = load_site(sites.activation_dir(id_dataset), site)
        levels = level_labels(data.labels, hierarchy)
        levels.update({c: data.images[c].astype(str).to_numpy() for c in attributes})
        naming = None
        if namer is not None:
            naming = (
                namer.for_images(data.images["index"].to_numpy()),
                namer.text_embeddings,
                namer.concepts,
            )
        for features, x, positive in _feature_sets(sites, site, data, device):
            table = unit_table(x, levels, hierarchy.names, top_n, min_active, positive, naming)
            table.insert(0, "sae", sites.sae_id(site, features))
            table.insert(1, "model", sites.model)
            table.insert(2, "site", site)
            table.insert(3, "features", features)
            frames.append(table)
            log.info(
                "semantics %s/%s: median leaf purity %.3f", site, features, table["purity"].median()
            )
    return pd.concat(frames, ignore_index=True)


def _feature_sets(
    sites: ModelSites, site: str, data: SiteData, device: torch.device
) -> Iterator[tuple[str, np.ndarray, bool]]:
    """(features name, (n_images, units) array, SAE codes?) for raw and every SAE."""
    yield RAW, data.raw, False
    for name, sae in sites.load_saes(site, device).items():
        yield name, sae_codes(sae, data), True


# -- ood_detection ---------------------------------------------------------------------------


def ood_detection(
    sites: ModelSites,
    train_dataset: str,
    id_dataset: str,
    ood_datasets: Sequence[str],
    knn_k: int,
    max_train: int | None,
    weight_decays: Sequence[float],
    val_fraction: float,
    seed: int,
    device: torch.device,
) -> pd.DataFrame:
    """AUROC and FPR@95 of every score (ood_detection module) per site and OOD dataset."""
    rows = []
    for site in sites.sites:
        train = load_site(sites.activation_dir(train_dataset), site, max_train, seed)
        test = load_site(sites.activation_dir(id_dataset), site)
        oods = {d: load_site(sites.activation_dir(d), site) for d in ood_datasets}
        classes = sorted(set(train.labels))
        y = class_ids(train.labels, classes)
        scores: dict[tuple[str, str], dict[str, np.ndarray]] = {}

        raw_train = train.raw
        probe = fit_probe(
            raw_train, y, len(classes), weight_decays, val_fraction, seed, device=device
        )
        mahalanobis = MahalanobisScore(raw_train, y, len(classes))
        knn = KNNScore(raw_train, knn_k, device=device)
        for name, data in [(id_dataset, test), *oods.items()]:
            x = data.raw
            per = head_scores(probe, x)
            per["mahalanobis"] = mahalanobis(x)
            per["knn"] = knn(x)
            for score, values in per.items():
                scores.setdefault((RAW, score), {})[name] = values

        for sae_name, sae in sites.load_saes(site, device).items():
            codes_train = sae_codes(sae, train)
            knn_codes = KNNScore(codes_train, knn_k, device=device)
            profile = ProfileScore(codes_train, y, len(classes))
            for name, data in [(id_dataset, test), *oods.items()]:
                codes = sae_codes(sae, data)
                per = {
                    "recon_error": reconstruction_error(sae, data),
                    "activation_mass": -codes.sum(axis=1),
                    "knn": knn_codes(codes),
                    "profile": profile(codes),
                }
                for score, values in per.items():
                    scores.setdefault((sae_name, score), {})[name] = values

        for (features, score), by_dataset in scores.items():
            id_scores = by_dataset[id_dataset]
            for ood in ood_datasets:
                rows.append(
                    {
                        "model": sites.model,
                        "site": site,
                        "layer": site_layer(site),
                        "features": features,
                        "score": score,
                        "id_dataset": id_dataset,
                        "ood_dataset": ood,
                        "auroc": auroc(id_scores, by_dataset[ood]),
                        "fpr95": fpr_at_95_tpr(id_scores, by_dataset[ood]),
                        "n_id": len(id_scores),
                        "n_ood": len(by_dataset[ood]),
                    }
                )
    return pd.DataFrame(rows)


# -- ood_generalization ----------------------------------------------------------------------


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


# -- ontology --------------------------------------------------------------------------------


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
        pruned = onto.prune(hierarchy, labels)
        raw = data.raw
        train_raw = load_site(sites.activation_dir(train_dataset), site, max_train, seed).raw
        saes = sites.load_saes(site, device)
        width = max((sae.width for sae in saes.values()), default=raw.shape[1])
        axes, mean = onto.pca_directions(train_raw)
        sets: list[tuple[str, np.ndarray, bool]] = [
            (RAW, raw, False),
            ("pca", (raw - mean) @ axes, False),
            ("random", (raw - mean) @ onto.random_directions(raw.shape[1], width, seed), False),
        ]
        sets += [(name, sae_codes(sae, data), True) for name, sae in saes.items()]
        for features, x, positive in sets:
            top = top_images(x, top_n, positive)
            lchs = onto.unit_hypernyms(pruned, labels, top, tau, min_active)
            for metric, value in onto.ontology_metrics(pruned, lchs).items():
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
