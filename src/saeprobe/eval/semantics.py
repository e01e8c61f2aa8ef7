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

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch


@dataclass
class TopImages:
    """indices, values: (units, top_n) positions of each unit's top images and activations;
    valid: (units, top_n) bool, False where the unit is not active on that image."""

    indices: np.ndarray
    values: np.ndarray
    valid: np.ndarray


def top_images(features: np.ndarray, top_n: int, positive_only: bool) -> TopImages:
    """Each unit's highest-activating images: features (n_images, units) -> TopImages."""
    k = min(top_n, features.shape[0])
    values, indices = torch.from_numpy(np.ascontiguousarray(features)).topk(k, dim=0)
    values, indices = values.T.numpy(), indices.T.numpy()
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
