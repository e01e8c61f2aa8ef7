"""What the tasks wrote about each latent of one SAE, gathered into one table.

Every column comes from a task's own output; a task that says nothing about an SAE (a vision
task about a text-encoder SAE, a task not configured) leaves its columns out, never filled in.
- semantics (`vision/semantics/{model}.csv`): name, name_score, purity, top_label;
- ood_detection (`vision/ood_detection/{model}_latents.csv`): ood_contribution;
- ood_generalization (`vision/ood_generalization/{model}_latents.csv`): probe_weight;
- ontology (`vision/ontology/{model}_units.csv`): lch (its name) and lch_height;
- steering (`tables/steering.csv`): steering_concept and steering_effect (mean effect at the
  largest strength);
- attributes (`tables/attributes.csv`): attribute, attribute_effect and attribute_consistency;
  where no task names a latent (a text-encoder SAE), an attribute the discovery kept (consistent
  across prompts and seeds) is its name and the consistency its naming score;
- crossmodal (`crossmodal/{model}/{site}/{name}/latents.csv`): modality_score.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

# column -> (label shown in the page, task), in the order the page shows them
ROLES: dict[str, tuple[str, str]] = {
    "name": ("name", "semantics"),
    "name_score": ("naming score", "semantics"),
    "purity": ("purity", "semantics"),
    "top_label": ("top label", "semantics"),
    "ood_contribution": ("OOD score contribution", "ood_detection"),
    "probe_weight": ("probe weight", "ood_generalization"),
    "lch": ("ontology LCH", "ontology"),
    "lch_height": ("LCH height", "ontology"),
    "steering_concept": ("steered concept", "steering"),
    "steering_effect": ("steering effect", "steering"),
    "attribute": ("attribute", "attributes"),
    "attribute_effect": ("attribute effect", "attributes"),
    "attribute_consistency": ("attribute consistency", "attributes"),
    "modality_score": ("modality score", "crossmodal"),
}


def _read(paths: Iterable[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _rows_of(table: pd.DataFrame, sae_id: str, model: str, site: str, name: str) -> pd.DataFrame:
    """The rows of `table` about one SAE: by its `sae` id, or by model, site and features."""
    if table.empty:
        return table
    if "sae" in table:
        return table[table["sae"] == sae_id]
    if {"model", "site", "features"} <= set(table.columns):
        return table[
            (table["model"] == model) & (table["site"] == site) & (table["features"] == name)
        ]
    return table.iloc[0:0]


def _by_latent(rows: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """{source column: role column} of rows with one row per latent, indexed by latent."""
    out = rows.drop_duplicates("latent").set_index("latent")[list(columns)]
    return out.rename(columns=dict(columns))


def latent_roles(
    sae_id: str,
    model: str,
    site: str,
    name: str,
    tables: Mapping[str, Iterable[str | Path]],
) -> pd.DataFrame:
    """One row per latent that some task wrote about (index: latent), columns of `ROLES`.

    tables: {task: CSV files} with the tasks' files of every model (each is filtered to this
    SAE; `crossmodal` must be this SAE's own latents.csv files)."""
    parts: list[pd.DataFrame] = []
    semantics = _rows_of(_read(tables.get("semantics", [])), sae_id, model, site, name)
    if len(semantics):
        parts.append(
            _by_latent(
                semantics,
                {"name": "name", "name_score": "name_score", "purity": "purity",
                 "top_label": "top_label"},
            )
        )  # fmt: skip
    for task, source, column in (
        ("ood_detection", "contribution", "ood_contribution"),
        ("ood_generalization", "weight", "probe_weight"),
    ):
        rows = _rows_of(_read(tables.get(task, [])), sae_id, model, site, name)
        if len(rows):
            parts.append(_by_latent(rows, {source: column}))
    ontology = _rows_of(_read(tables.get("ontology", [])), sae_id, model, site, name)
    if len(ontology):
        ontology = ontology.assign(height=ontology["height"].where(ontology["height"] >= 0))
        parts.append(_by_latent(ontology, {"lch_name": "lch", "height": "lch_height"}))
    steering = _rows_of(_read(tables.get("steering", [])), sae_id, model, site, name)
    if len(steering):
        top = steering[steering["strength"] == steering["strength"].max()]
        mean = top.groupby(["latent", "concept"], as_index=False)["effect"].mean()
        mean = mean.sort_values("effect", ascending=False)
        parts.append(_by_latent(mean, {"concept": "steering_concept", "effect": "steering_effect"}))
    attributes = _rows_of(_read(tables.get("attributes", [])), sae_id, model, site, name)
    if len(attributes):
        best = attributes.sort_values("rank") if "rank" in attributes else attributes
        columns = {"attribute": "attribute", "effect": "attribute_effect",
                   "consistency": "attribute_consistency"}  # fmt: skip
        if "kept" in best:
            columns["kept"] = "attribute_kept"
        parts.append(_by_latent(best, columns))
    crossmodal = _read(tables.get("crossmodal", []))
    if len(crossmodal):
        parts.append(_by_latent(crossmodal, {"modality_score": "modality_score"}))
    if not parts:
        return pd.DataFrame(index=pd.Index([], name="latent"))
    out = pd.concat(parts, axis=1)
    out.index.name = "latent"
    if "name" not in out and "attribute_kept" in out:  # named by a kept attribute
        kept = out["attribute_kept"].astype(str).str.lower() == "true"
        out["name"] = out["attribute"].where(kept)
        out["name_score"] = out["attribute_consistency"].where(kept)
    return out[[c for c in ROLES if c in out]]


def role_value(value: object) -> object:
    """A JSON-ready cell: None for a missing value, floats rounded to 4 significant digits."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.4g}")
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
