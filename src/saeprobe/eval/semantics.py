"""Task `semantics`: are SAE latents semantically meaningful?

Definitions (per unit: an SAE latent, or a raw neuron of the same site for comparison):
- top images: the `top_n` images of the in-distribution set with the highest activation; for
  SAE latents only images where the latent is active (> 0) count, and a latent active on fewer
  than `min_active` images gets no purity or name (it is reported as rare).
- purity at a level: the fraction of the top images whose label at that level (the ancestor at
  hierarchy depth d, the leaf label, or an attribute column such as colour) equals the most
  common one among them; `top_label` is that most common leaf label's name.
- name: the concept of the vocabulary (hierarchy node names, attribute values, extra words)
  whose text embedding, from the model's own text tower (or the configured namer model's),
  is most cosine-similar to the unit's image direction: the mean normalised image embedding of
  its top images minus the mean over all images. Text embeddings are centred over the
  vocabulary before the cosine, so words common to every prompt do not win. `name_score` is
  that cosine (in [-1, 1]).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.activations.store import ActivationStore
from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows
from saeprobe.eval.features import (
    ModelSites,
    SaeCodes,
    feature_sets,
    group_mean_directions,
    level_labels,
    load_site,
    random_directions,
    sae_codes,
)
from saeprobe.hierarchy import Hierarchy
from saeprobe.stats import Estimate, bootstrap

log = logging.getLogger(__name__)


@dataclass
class TopImages:
    """indices, values: (units, top_n) positions of each unit's top images and activations;
    valid: (units, top_n) bool, False where the unit is not active on that image."""

    indices: np.ndarray
    values: np.ndarray
    valid: np.ndarray


def top_images(
    features: np.ndarray, top_n: int, positive_only: bool, block: int = 1024
) -> TopImages:
    """Each unit's highest-activating images: features (n_images, units) -> TopImages.

    Units are ranked `block` columns at a time (no transposed copy of the whole matrix)."""
    k = min(top_n, features.shape[0])
    units = features.shape[1]
    values = np.empty((units, k), dtype=np.float32)
    indices = np.empty((units, k), dtype=np.int64)
    for a in range(0, units, block):
        part = torch.from_numpy(np.ascontiguousarray(features[:, a : a + block], np.float32))
        v, i = part.topk(k, dim=0)
        values[a : a + block], indices[a : a + block] = v.T.numpy(), i.T.numpy()
    valid = values > 0 if positive_only else np.ones_like(values, dtype=bool)
    return TopImages(indices=indices, values=values, valid=valid)


def purity(labels: np.ndarray, top: TopImages, min_active: int) -> tuple[np.ndarray, np.ndarray]:
    """Label purity of each unit's valid top images.

    labels: (n_images,) labels at one level. Returns purity (units,) float (NaN where fewer
    than `min_active` images are valid) and the modal label (units,) object ('' there).
    """
    units = top.indices.shape[0]
    out = np.full(units, np.nan)
    modal = np.full(units, "", dtype=object)
    for j in range(units):
        chosen = labels[top.indices[j][top.valid[j]]]
        if len(chosen) < max(min_active, 1):
            continue
        label, count = Counter(chosen.tolist()).most_common(1)[0]
        out[j], modal[j] = count / len(chosen), label
    return out, modal


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def name_units(
    top: TopImages,
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    concepts: Sequence[str],
    min_active: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Name each unit by the concept closest to its image direction (module docstring).

    image_embeddings: (n_images, e) in the same image order as the features; text_embeddings:
    (len(concepts), e). Returns names (units,) object ('' for rare units) and scores (units,).
    """
    images = _normalise(np.asarray(image_embeddings, dtype=np.float64))
    mean = images.mean(axis=0)
    texts = _normalise(np.asarray(text_embeddings, dtype=np.float64))
    texts = _normalise(texts - texts.mean(axis=0))
    units = top.indices.shape[0]
    names = np.full(units, "", dtype=object)
    scores = np.full(units, np.nan)
    for j in range(units):
        chosen = top.indices[j][top.valid[j]]
        if len(chosen) < max(min_active, 1):
            continue
        direction = _normalise(images[chosen].mean(axis=0) - mean)
        sims = texts @ direction
        best = int(np.argmax(sims))
        names[j], scores[j] = concepts[best], float(sims[best])
    return names, scores


def unit_table(
    features: np.ndarray,
    level_labels: Mapping[str, np.ndarray],
    label_names: Mapping[str, str],
    top_n: int,
    min_active: int,
    positive_only: bool,
    naming: tuple[np.ndarray, np.ndarray, Sequence[str]] | None,
) -> pd.DataFrame:
    """One row per unit: latent, frequency, max_activation, n_top, purity per level, top_label,
    name, name_score.

    features: (n_images, units); level_labels: level name -> (n_images,) labels, where the
    level "leaf" gives `purity` and `top_label`; label_names maps a label to its display name;
    naming: (image_embeddings, text_embeddings, concepts), or None to name each unit by its
    top label with name_score = its leaf purity.
    """
    top = top_images(features, top_n, positive_only)
    table = pd.DataFrame({"latent": np.arange(features.shape[1])})
    table["frequency"] = (features > 0).mean(axis=0) if positive_only else np.nan
    table["max_activation"] = top.values[:, 0]
    table["n_top"] = top.valid.sum(axis=1)
    for level, labels in level_labels.items():
        pur, modal = purity(np.asarray(labels), top, min_active)
        table[f"purity_{level}"] = pur
        if level == "leaf":
            table["purity"] = pur
            table["top_label"] = [label_names.get(m, m) if m else "" for m in modal]
    if naming is None:
        table["name"] = table["top_label"]
        table["name_score"] = table["purity"]
    else:
        images, texts, concepts = naming
        table["name"], table["name_score"] = name_units(top, images, texts, concepts, min_active)
    return table


def grid_latents(table: pd.DataFrame, count: int) -> list[int]:
    """The `count` named latents with the highest name_score, one per name first, then the rest."""
    named = table[table["name"] != ""].sort_values(
        ["name_score", "latent"], ascending=[False, True]
    )
    first = named.drop_duplicates("name")
    rest = named.drop(first.index)
    return pd.concat([first, rest])["latent"].head(count).astype(int).tolist()


# -- the task on a model's sites --


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
        for features, x, positive in feature_sets(sites, site, data, device):
            table = unit_table(x, levels, hierarchy.names, top_n, min_active, positive, naming)
            table.insert(0, "sae", sites.sae_id(site, features))
            table.insert(1, "model", sites.model)
            table.insert(2, "site", site)
            table.insert(3, "features", features)
            frames.append(table)
            log.info(
                "semantics %s/%s: median leaf purity %.3f", site, features, table["purity"].median()
            )
            del x  # one SAE's codes at a time
    return pd.concat(frames, ignore_index=True)


# (title, rows of (row label, thumbnails, each (H, W, 3) uint8)), as plots.vision.top_image_grid
GridPanel = tuple[str, list[tuple[str, list[np.ndarray]]]]


def semantics_task(
    sites: ModelSites,
    id_dataset: str,
    hierarchy: Hierarchy,
    attributes: Sequence[str],
    settings: Mapping[str, Any],
    dataset_spec: Mapping[str, Any],
    namer_spec: Mapping[str, Any] | None,
    namer_dir: str | Path | None,
    device: torch.device,
    primary: str | None = None,
    seed: int = 0,
    control: tuple[ModelSites, str] | None = None,
) -> tuple[pd.DataFrame, list[GridPanel], list[dict]]:
    """The semantics job of one model: its unit table, the top-image grid panels and the
    claim's evidence rows (`semantics_claim` on the `primary` SAE; none when it is None).

    settings: the task's config (top_n, min_active, extra_concepts, prompt, grid_sae,
    grid_latents, grid_images). namer_spec/namer_dir: the model whose text tower names the
    latents and its pooled activations on `id_dataset` (None: latents are named by purity).
    control: an untrained copy's sites and primary SAE name (`semantics_claim`), or None.
    Returns (the `semantics` table, one `semantics_grid` panel per site, evidence rows).
    """
    namer = None
    if namer_spec is not None and namer_dir is not None:
        images = load_site(sites.activation_dir(id_dataset), sites.sites[0]).images
        concepts = concept_vocabulary(hierarchy, images, attributes, settings["extra_concepts"])
        namer = build_namer(namer_spec, Path(namer_dir), concepts, settings["prompt"], device)
        log.info("naming with the text tower of %s over %d concepts", namer_dir, len(concepts))
    table = semantics(
        sites,
        id_dataset,
        hierarchy,
        attributes,
        namer,
        top_n=settings["top_n"],
        min_active=settings["min_active"],
        device=device,
    )
    panels = semantics_grid(
        sites,
        id_dataset,
        table,
        dataset_spec,
        settings.get("grid_sae") or sites.sae_names[0],
        n_latents=settings["grid_latents"],
        n_images=settings["grid_images"],
        device=device,
    )
    evidence = (
        []
        if primary is None
        else semantics_claim(
            sites, id_dataset, primary, settings["top_n"], seed, device, control=control
        )
    )
    return table, panels, evidence


def semantics_grid(
    sites: ModelSites,
    id_dataset: str,
    table: pd.DataFrame,
    dataset_spec: Mapping[str, Any],
    grid_sae: str,
    n_latents: int,
    n_images: int,
    device: torch.device,
) -> list[GridPanel]:
    """Per site, the top `n_images` images of the SAE `grid_sae`'s best-named latents.

    table: the `semantics` table (rows of site, features, latent, name, name_score, purity);
    latents are chosen by `semantics.grid_latents`. Each row of a panel is one latent, its
    label "#latent name (name_score; purity)", its images (<= n_images of (H, W, 3) uint8,
    positive activations only): the thumbnails saved at extraction where there are some, else
    the dataset's images (`ActivationStore.example_thumbnails`).
    """
    panels: list[GridPanel] = []
    for site in sites.sites:
        data = load_site(sites.activation_dir(id_dataset), site)
        store = ActivationStore(sites.activation_dir(id_dataset) / site)
        rows_of = table[(table["site"] == site) & (table["features"] == grid_sae)]
        chosen = grid_latents(rows_of, n_latents)
        sae = sites.load_sae(site, grid_sae, device)
        codes = sae_codes(sae, data, latents=np.asarray(chosen, dtype=np.int64))
        top = top_images(codes, n_images, positive_only=True)
        shown = [
            data.images["index"].iloc[top.indices[j][top.valid[j]]].tolist()
            for j in range(len(chosen))
        ]
        # one read of the store's example table and thumbnails for all latents of the site
        flat = iter(store.example_thumbnails(dataset_spec, [i for r in shown for i in r]) or [])
        rows = []
        for latent, indices in zip(chosen, shown, strict=True):
            info = rows_of[rows_of["latent"] == latent].iloc[0]
            rows.append(
                (
                    f"#{latent} {info['name']}\n"
                    f"({info['name_score']:.2f}; purity {info['purity']:.2f})",
                    list(islice(flat, len(indices))),
                )
            )
        panels.append(
            (f"{sites.model} {site}, SAE {grid_sae}: top images of its best-named latents", rows)
        )
    return panels


# -- evidence for the claim: purity against random directions, with controls --
#
# A unit's purity counts only when all `top_n` of its top images are valid (for SAE latents:
# active), so every unit set is judged on the same number of images; purity over fewer images
# is higher by chance alone.


def full_purity(features: np.ndarray, labels: np.ndarray, top_n: int, positive_only: bool):
    """Leaf purity (m,) of the units of features (n_images, units) with `top_n` valid images."""
    top = top_images(features, top_n, positive_only)
    keep = top.valid.sum(axis=1) >= min(top_n, features.shape[0])
    pur, _ = purity(np.asarray(labels), top, top_n)
    return pur[keep]


def mean_difference(a: np.ndarray, b: np.ndarray, seed: int) -> Estimate:
    """mean(a) - mean(b) with a bootstrap CI resampling each unit set within itself.

    The mean, not the median: purity takes only top_n + 1 values, so a median's bootstrap
    sits on that lattice and its bounds tie with 0."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return Estimate(float("nan"))
    values = np.concatenate([a, b])
    group = np.concatenate([np.zeros(len(a), int), np.ones(len(b), int)])

    def stat(v: np.ndarray, g: np.ndarray) -> float:
        return float(v[g == 0].mean() - v[g == 1].mean())

    return bootstrap(stat, [values, group], seed, strata=group)


def nuisance_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """A label per image with the leaf labels' frequencies and no pixel correlate: (n,)."""
    return np.random.default_rng([int(seed), 4243]).permutation(np.asarray(labels))


UNTRAINED = NEGATIVE + ":untrained"
NUISANCE_DRAWS = 20


def nuisance_difference(
    sae: np.ndarray, rand: np.ndarray, labels: np.ndarray, top_n: int, seed: int
) -> Estimate:
    """Mean purity of the SAE's units minus random directions' on NUISANCE_DRAWS independent
    nuisance labels (`nuisance_labels`), with a normal interval from the spread over the draws.

    Units share top images, so a bootstrap over units on one draw is overconfident: one
    shuffle that happens to put equal labels on a few popular images counts once per unit.
    Independent draws make the interval honest. sae: (n_images, width) codes; rand:
    (n_images, m) random-direction projections; labels: (n_images,) leaf labels."""
    top_sae, top_rand = top_images(sae, top_n, True), top_images(rand, top_n, False)
    full_sae = top_sae.valid.sum(axis=1) >= min(top_n, sae.shape[0])
    diffs = []
    for k in range(NUISANCE_DRAWS):
        nuisance = nuisance_labels(labels, seed + k)
        p_sae = purity(nuisance, top_sae, top_n)[0][full_sae]
        p_rand = purity(nuisance, top_rand, top_n)[0]
        diffs.append(np.nanmean(p_sae) - np.nanmean(p_rand))
    d = np.asarray(diffs)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return Estimate(float(d.mean()), float(d.mean() - half), float(d.mean() + half))


def purity_advantage(
    raw: np.ndarray,
    sae: np.ndarray,
    labels: np.ndarray,
    top_n: int,
    seed: int,
    rand: np.ndarray | None = None,
) -> dict[str, Estimate]:
    """The measured statistics of one model's site: the SAE's mean purity minus norm-matched
    random directions' (`purity_minus_random`, judged), raw neurons minus random and SAE minus
    raw (reported). raw: (n_images, d); sae: (n_images, width) codes; labels: (n_images,);
    rand: (n_images, width) the centred activations' projections on the seeded random
    directions, when the caller has them already."""
    labels = np.asarray(labels).astype(str)
    if rand is None:
        directions = random_directions(raw.shape[1], sae.shape[1], seed).astype(np.float32)
        rand = (raw - raw.mean(axis=0)) @ directions
    p_rand = full_purity(rand, labels, top_n, False)
    p_raw = full_purity(raw, labels, top_n, False)
    p_sae = full_purity(sae, labels, top_n, True)
    return {
        "purity_minus_random": mean_difference(p_sae, p_rand, seed),
        "raw_minus_random": mean_difference(p_raw, p_rand, seed),
        "sae_minus_raw": mean_difference(p_sae, p_raw, seed),
    }


def semantics_evidence(
    site: str,
    raw: np.ndarray,
    codes: Mapping[str, np.ndarray],
    primary: str,
    labels: np.ndarray,
    top_n: int,
    seed: int,
    nuisance: np.ndarray | None = None,
    untrained: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[dict]:
    """Evidence rows of the `semantics` claim at one site.

    raw: (n_images, d) activations; codes: SAE name -> (n_images, width) codes (must hold
    `primary`); labels: (n_images,) leaf labels. Random directions (as many as the primary's
    width) and class-mean directions project the centred activations.
    measured: `purity_advantage` of the primary SAE; positive: class-mean directions of
    the leaf labels minus random; negative: the primary SAE minus random directions, both on a
    nuisance label (`nuisance_difference` over independent draws, unless `nuisance`
    (n_images,) is given); negative
    `UNTRAINED` (with `untrained` = (raw (m, d'), primary SAE codes (m, w'), leaf labels (m,))
    of the same site of an untrained copy of the model): `purity_advantage` there, so the
    measured case's code on a model that learnt nothing; sensitivity: every other SAE minus
    random.
    """
    if primary not in codes:
        raise KeyError(f"semantics: primary SAE {primary!r} not among {sorted(codes)}")
    labels = np.asarray(labels).astype(str)
    centred = raw - raw.mean(axis=0)
    width = codes[primary].shape[1]
    rand = centred @ random_directions(raw.shape[1], width, seed).astype(np.float32)
    classes = np.unique(labels)
    means = centred @ group_mean_directions(raw, [labels == c for c in classes])

    def pur(x: np.ndarray, on: np.ndarray, positive: bool) -> np.ndarray:
        return full_purity(x, on, top_n, positive)

    p_rand = pur(rand, labels, False)
    n_sae = len(pur(codes[primary], labels, True))
    note = f"top_n={top_n}; units with all top_n images active: SAE {n_sae}"
    measured = purity_advantage(raw, codes[primary], labels, top_n, seed, rand=rand)
    rows = evidence_rows("semantics", site, MEASURED, measured, note)
    rows += evidence_rows(
        "semantics",
        site,
        POSITIVE,
        {"purity_minus_random": mean_difference(pur(means, labels, False), p_rand, seed)},
        f"class-mean directions of {len(classes)} leaf labels",
    )
    rows += evidence_rows(
        "semantics",
        site,
        NEGATIVE,
        {
            "purity_minus_random": (
                nuisance_difference(codes[primary], rand, labels, top_n, seed)
                if nuisance is None
                else mean_difference(
                    pur(codes[primary], np.asarray(nuisance), True),
                    pur(rand, np.asarray(nuisance), False),
                    seed,
                )
            )
        },
        "primary SAE vs random directions on shuffled (nuisance) labels"
        + (f", {NUISANCE_DRAWS} draws" if nuisance is None else ""),
    )
    if untrained is not None:
        u_raw, u_sae, u_labels = untrained
        rows += evidence_rows(
            "semantics",
            site,
            UNTRAINED,
            purity_advantage(u_raw, u_sae, u_labels, top_n, seed),
            "primary SAE vs random directions of an untrained (random-init) copy of the model",
        )
    for name in codes:
        if name != primary:
            diff = mean_difference(pur(codes[name], labels, True), p_rand, seed)
            rows += evidence_rows(
                "semantics", site, SENSITIVITY + name, {"purity_minus_random": diff}
            )
    return rows


def semantics_claim(
    sites: ModelSites,
    id_dataset: str,
    primary: str,
    top_n: int,
    seed: int,
    device: torch.device,
    control: tuple[ModelSites, str] | None = None,
) -> list[dict]:
    """Evidence rows of the `semantics` claim at every site of a model (`semantics_evidence`);
    control: (the untrained copy's sites, its primary SAE's name) for the `UNTRAINED` negative."""
    rows = []
    for site in sites.sites:
        data = load_site(sites.activation_dir(id_dataset), site)
        codes = SaeCodes(sites, site, data, device)
        untrained = None
        if control is not None:
            c_sites, c_primary = control
            c_data = load_site(c_sites.activation_dir(id_dataset), site)
            c_sae = c_sites.load_sae(site, c_primary, device)
            untrained = (c_data.raw, sae_codes(c_sae, c_data), c_data.labels)
        rows += semantics_evidence(
            site, data.raw, codes, primary, data.labels, top_n, seed, untrained=untrained
        )
    return rows
