"""Figures of the vision tasks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure

BASELINES = ("raw", "pca", "random")


def _order(features: pd.Series) -> list[str]:
    """Baselines first, then SAEs in table order."""
    seen = list(dict.fromkeys(features))
    return [f for f in BASELINES if f in seen] + [f for f in seen if f not in BASELINES]


def top_image_grid(
    panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[np.ndarray]]]]],
) -> plt.Figure:
    """Image grids: panels of (title, rows of (row label, images (H, W, 3) uint8)), stacked."""
    n_rows = sum(len(rows) for _, rows in panels)
    n_cols = max((len(images) for _, rows in panels for _, images in rows), default=1)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(1.1 * n_cols + 2.2, 1.1 * n_rows + 0.4 * len(panels)),
        squeeze=False,
    )
    r = 0
    for title, rows in panels:
        for i, (label, images) in enumerate(rows):
            for c in range(n_cols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c < len(images):
                    ax.imshow(images[c], interpolation="nearest")
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            if i == 0:
                axes[r, 0].set_title(title, loc="left", fontsize=9, x=0.0)
            r += 1
    fig.tight_layout()
    return fig


def purity_by_level(table: pd.DataFrame) -> plt.Figure:
    """Median leaf/hierarchy/attribute purity of the top images: SAE latents vs raw neurons."""
    levels = [c for c in table.columns if c.startswith("purity_")]
    long = table.melt(
        id_vars=["model", "site", "features"], value_vars=levels, var_name="level", value_name="p"
    ).dropna(subset=["p"])
    long["level"] = long["level"].str.removeprefix("purity_")
    grid = sns.catplot(
        data=long,
        x="level",
        y="p",
        hue="features",
        hue_order=_order(long["features"]),
        col="site",
        row="model",
        kind="bar",
        estimator="median",
        errorbar=("pi", 50),
        height=3.2,
        aspect=1.3,
        sharey=True,
    )
    grid.set_titles("{row_name} | {col_name}")
    grid.set_axis_labels("label level", "purity of top images (median, IQR)")
    grid.set(ylim=(0, 1.02))
    return grid.figure


def _ood_columns(table: pd.DataFrame) -> list[str]:
    """OOD sets ordered by group (near, far, legacy, none), each group's mean row last."""
    group = table.get("ood_group", pd.Series("", index=table.index)).fillna("").astype(str)
    rank = {"near": 0, "far": 1, "legacy": 2}
    pairs = set(zip(table["ood_dataset"], group, strict=True))
    return [
        d
        for d, _ in sorted(pairs, key=lambda p: (rank.get(p[1], 3), p[0].endswith("(mean)"), p[0]))
    ]


GROUP_ORDER = ("near", "far", "legacy")


def _ood_panels(table: pd.DataFrame) -> list[str]:
    """The figure's panel groups: near, far, legacy (those present), then "" for sets in no
    group; [""] alone when no set has a group."""
    group = table.get("ood_group", pd.Series("", index=table.index)).fillna("").astype(str)
    present = set(group)
    return (
        [g for g in GROUP_ORDER if g in present]
        + [g for g in sorted(present - set(GROUP_ORDER)) if g]
        + ([""] if "" in present else [])
    )


def ood_auroc(table: pd.DataFrame) -> plt.Figure:
    """AUROC of every OOD score, raw-feature baselines vs SAE scores (SAE bars: mean and range
    over SAEs), one row of panels per site: one panel per OOD group (near, far, legacy; sets in
    no group last) with the group's sets and its "<group> (mean)" row, or a single panel of
    every set when no group is configured."""
    data = table.copy()
    data["ood_group"] = data.get("ood_group", pd.Series("", index=data.index))
    data["ood_group"] = data["ood_group"].fillna("").astype(str)
    data["method"] = np.where(data["features"] == "raw", "raw: " + data["score"], data["score"])
    where = data["site"].astype(str)
    if "model" in data:
        where = data["model"].astype(str) + " | " + where
    data["where"] = where
    sites = list(dict.fromkeys(data["where"]))
    panels = _ood_panels(data)
    methods = sorted(data["method"].unique(), key=lambda m: (not m.startswith("raw"), m))
    grouped = panels != [""]
    fig, axes = plt.subplots(
        len(sites),
        len(panels),
        figsize=(4.6 * len(panels), 0.8 + 0.32 * len(methods) * len(sites) + 0.6 * len(sites)),
        squeeze=False,
        sharex=True,
    )
    for r, site in enumerate(sites):
        for c, group in enumerate(panels):
            ax = axes[r, c]
            part = data[(data["where"] == site) & (data["ood_group"] == group)]
            sets = [d for d in _ood_columns(data) if d in set(part["ood_dataset"])]
            if part.empty:
                ax.text(0.5, 0.5, "no set", ha="center", va="center", transform=ax.transAxes)
            else:
                sns.barplot(
                    data=part,
                    y="method",
                    x="auroc",
                    hue="ood_dataset",
                    hue_order=sets,
                    order=methods,
                    estimator="mean",
                    errorbar=("pi", 100),
                    ax=ax,
                )
                ax.legend(fontsize=6, title=None, loc="lower right")
            ax.axvline(0.5, color="grey", lw=0.8, ls="--")
            label = f"{group}-OOD" if group else ("no group" if grouped else "every OOD set")
            ax.set_title(f"{site} | {label}", fontsize=9)
            ax.set(xlim=(0, 1), xlabel="AUROC (SAE bars: mean, range)", ylabel="score")
    fig.tight_layout()
    return fig


def _controls(table: pd.DataFrame) -> pd.Series:
    """(rows,) bool: rows of the planted spurious-correlation controls (a non-empty view)."""
    if "view" not in table:
        return pd.Series(False, index=table.index)
    return table["view"].fillna("").astype(str) != ""


def generalization(table: pd.DataFrame) -> plt.Figure:
    """Probe accuracy (all units) per test set: raw activations vs each SAE's codes, and beside
    them the controls on the conflicting group: superclass probes on raw activations plus planted
    colour units, minus the units named colour (positive) or minus random ones (negative), and
    the SAE minus its colour latents (reported)."""
    data = table[table["k"] == "all"]
    grid = sns.catplot(
        data=data,
        x="test_dataset",
        y="accuracy",
        hue="features",
        hue_order=_order(data["features"]),
        col="site",
        row="model",
        kind="bar",
        height=3.2,
        aspect=1.4,
    )
    grid.set_titles("{row_name} | {col_name}")
    grid.set_axis_labels("test set", "probe accuracy")
    grid.set(ylim=(0, 1))
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
    return grid.figure


def generalization_topk(table: pd.DataFrame) -> plt.Figure:
    """Probe accuracy against the number of units kept (top-k by F statistic), per test set."""
    data = table[~_controls(table)].copy()
    if "selection" in data:  # per-class sparse probes are a different axis
        data = data[data["selection"].fillna("all") != "per_class"]
    data["kind"] = np.where(data["features"] == "raw", "raw", "SAE")
    grid = sns.relplot(
        data=data,
        x="n_features",
        y="accuracy",
        hue="test_dataset",
        style="kind",
        units="features",
        estimator=None,
        col="site",
        row="model",
        kind="line",
        marker="o",
        height=3.2,
        aspect=1.3,
    )
    grid.set(xscale="log", ylim=(0, 1))
    grid.set_titles("{row_name} | {col_name}")
    grid.set_axis_labels("units kept (top-k by ANOVA F; log scale)", "probe accuracy")
    return grid.figure


def ontology_heights(units: pd.DataFrame) -> plt.Figure:
    """Distribution of LCH heights per site and feature set (unscored units left out)."""
    data = units[units["height"] >= 0]
    grid = sns.displot(
        data=data,
        x="height",
        hue="features",
        hue_order=_order(data["features"]),
        col="site",
        row="model",
        multiple="dodge",
        stat="probability",
        common_norm=False,
        discrete=True,
        shrink=0.8,
        height=3.2,
        aspect=1.3,
    )
    grid.set_titles("{row_name} | {col_name}")
    grid.set(xticks=range(int(data["height"].max()) + 1 if len(data) else 1))
    grid.set_axis_labels("height of the lowest common hypernym (0 = class)", "fraction of units")
    return grid.figure


def ontology_coverage(metrics: pd.DataFrame) -> plt.Figure:
    """Coverage of internal hierarchy nodes, fraction of specific units (LCH lower than the
    label-permutation null) and of pure units, against the baselines (width-matched)."""
    shown = ["frac_specific", "coverage_internal", "coverage_leaves", "frac_pure"]
    data = metrics[metrics["metric"].isin(shown)]
    grid = sns.catplot(
        data=data,
        x="features",
        y="value",
        hue="metric",
        col="site",
        row="model",
        order=_order(data["features"]),
        kind="bar",
        height=3.2,
        aspect=1.5,
    )
    grid.set_titles("{row_name} | {col_name}")
    grid.set_axis_labels("features", "fraction")
    grid.set(ylim=(0, 1.02))
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
    return grid.figure


def sae_quality(table: pd.DataFrame) -> plt.Figure:
    """Sparsity-fidelity frontier: NMSE against L0 per SAE, and downstream accuracy recovered."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.scatterplot(data=table, x="l0", y="nmse", hue="arch", style="site", s=70, ax=axes[0])
    axes[0].set(xlabel="L0 (mean active latents per input)", ylabel="NMSE (held out)")
    axes[0].set_xscale("log")
    data = table.dropna(subset=["downstream_recovered"])
    if len(data):
        sns.barplot(data=data, x="site", y="downstream_recovered", hue="arch", ax=axes[1])
        axes[1].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[1].set(xlabel="site", ylabel="downstream accuracy recovered")
    for ax in axes:
        if ax.get_legend() is not None:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# Per vision task, its figures: output name prefix -> figure of the collected table.
TASK_FIGURES: dict[str, dict[str, Callable[[pd.DataFrame], plt.Figure]]] = {
    "semantics": {"purity": purity_by_level},
    "ood_detection": {"auroc": ood_auroc},
    "ood_generalization": {"accuracy": generalization, "topk": generalization_topk},
    "ontology": {"coverage": ontology_coverage},
}


def write_task_table(
    task: str,
    tables: Sequence[str | Path],
    units: Sequence[str | Path],
    outputs: Mapping[str, str | Path],
) -> pd.DataFrame:
    """Concatenate one vision task's per-model tables and draw its figures.

    outputs: "table" (the collected CSV) and "{figure}_png"/"{figure}_pdf" for every figure of
    `TASK_FIGURES[task]`, plus "heights_png"/"heights_pdf" for ontology, whose per-unit
    tables `units` (one per model) feed the heights figure. Returns the collected table.
    """
    table = pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in tables])
    atomic_write_csv(outputs["table"], table)
    for name, draw in TASK_FIGURES[task].items():
        save_figure(draw(table), outputs[f"{name}_png"], outputs[f"{name}_pdf"])
    if task == "ontology":
        unit_rows = pd.concat([pd.read_csv(p, keep_default_na=False) for p in units])
        save_figure(ontology_heights(unit_rows), outputs["heights_png"], outputs["heights_pdf"])
    return table
