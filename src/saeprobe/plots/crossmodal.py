"""Figures and the table of the crossmodal task (one SAE over LLaVA image and text tokens)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from saeprobe.io import atomic_path, atomic_write_csv

log = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "sae",
    "model",
    "layer",
    "metric",
    "concept",
    "attribute",
    "value",
    "null_value",
    "null_lo",
    "null_hi",
    "p_value",
)


def _split(site: str) -> tuple[str, int, str]:
    """`{model}/L{layer}_{tokens}/{name}` -> (model, layer, name)."""
    model, site_name, name = site.split("/")
    return model, int(site_name[1:].split("_")[0]), name


def crossmodal_table(sites: Sequence[str], summaries: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """crossmodal.csv: one row per (sae, metric, concept); summary rows have concept empty."""
    frames = []
    for site, frame in zip(sites, summaries, strict=True):
        model, layer, _ = _split(site)
        f = frame.copy()
        f["sae"], f["model"], f["layer"] = site, model, layer
        frames.append(f)
    table = pd.concat(frames, ignore_index=True)
    for col in TABLE_COLUMNS:
        if col not in table:
            table[col] = np.nan
    table["concept"] = table["concept"].fillna("")
    table["attribute"] = table["attribute"].fillna("")
    return table[list(TABLE_COLUMNS)]


def _save(fig: plt.Figure, paths: Sequence[str | Path]) -> None:
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), bbox_inches="tight", dpi=150)
    plt.close(fig)


def plot_modality_scores(
    sites: Sequence[str], latents: Sequence[pd.DataFrame], paths: Sequence[str | Path]
) -> None:
    """Histogram of the modality score of alive latents, one panel per (model, layer)."""
    n = len(sites)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.0), squeeze=False, sharey=True)
    for ax, site, frame in zip(axes[0], sites, latents, strict=True):
        alive = frame[frame["alive"].astype(bool)]
        sns.histplot(
            alive,
            x="modality_score",
            hue=alive["shared"].map({True: "fires on both", False: "one modality"}),
            bins=np.linspace(-1, 1, 21),
            multiple="stack",
            ax=ax,
        )
        ax.set_xlabel("modality score (text -1 … +1 image)")
        ax.set_ylabel("alive latents")
        ax.set_title(f"{site}\nshared {alive['shared'].mean():.0%} of {len(alive)}", fontsize=9)
    _save(fig, paths)


def _p_values(summary: pd.DataFrame) -> str:
    """ "p = …" of the judged statistics and the text-split positive, for a panel title."""
    rows = summary[summary["concept"].fillna("") == ""].set_index("metric")["p_value"]
    names = {
        "concept_overlap": "p",
        "concept_overlap_within_attribute": "within-attribute p",
        "text_split:concept_overlap": "text-split positive p",
        "text_only:concept_overlap": "captions-alone p",
    }
    return ", ".join(f"{label} = {rows[m]:.3g}" for m, label in names.items() if m in rows)


def plot_concept_overlap(
    sites: Sequence[str],
    concepts: Sequence[pd.DataFrame],
    paths: Sequence[str | Path],
    summaries: Sequence[pd.DataFrame] | None = None,
) -> None:
    """Per-concept top-m overlap of image and word latents with the shuffled-pair null band
    (and, where the text-only control ran, the overlap with the word latents of the captions
    run without their image); with `summaries` (one per site) the titles carry the
    permutation p-values."""
    n = len(sites)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.8 * n), squeeze=False)
    notes = [_p_values(f) for f in summaries] if summaries is not None else [""] * n
    for ax, site, frame, note in zip(axes[:, 0], sites, concepts, notes, strict=True):
        if frame.empty:
            ax.text(0.5, 0.5, "no concept with enough tokens", ha="center", transform=ax.transAxes)
            ax.set_title(site, fontsize=9)
            continue
        f = frame.sort_values(["attribute", "concept"]).reset_index(drop=True)
        x = np.arange(len(f))
        ax.fill_between(
            x, f["null_lo"], f["null_hi"], step="mid", color="0.85", label="null 95% band"
        )
        ax.plot(x, f["null_value"], "k--", lw=1, drawstyle="steps-mid", label="null mean")
        palette = dict(zip(sorted(f["attribute"].unique()), sns.color_palette(), strict=False))
        ax.bar(x, f["overlap"], color=[palette[a] for a in f["attribute"]], alpha=0.9, width=0.6)
        if "overlap_text_only" in f:
            ax.plot(x, f["overlap_text_only"], "kv", ms=5, label="captions without the image")
        ax.set_xticks(x, f["concept"], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("top-m overlap")
        ax.set_ylim(0, 1)
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in palette.values()]
        ax.legend(
            handles + ax.get_legend_handles_labels()[0],
            list(palette) + ax.get_legend_handles_labels()[1],
            fontsize=7,
            ncol=3,
        )
        ax.set_title(f"{site}: image vs word top latents per concept\n{note}", fontsize=9)
    fig.tight_layout()
    _save(fig, paths)


def plot_shared_latents(
    sites: Sequence[str],
    shared: Sequence[list[dict[str, Any]]],
    thumbs: Sequence[np.ndarray],
    paths: Sequence[str | Path],
    n_images: int = 4,
) -> None:
    """Rows = shared latents (per site): the top images and the top words of each latent."""
    rows = [(site, s, t) for site, ss, t in zip(sites, shared, thumbs, strict=True) for s in ss]
    n = max(len(rows), 1)
    fig, axes = plt.subplots(n, n_images + 1, figsize=(1.5 * (n_images + 2.5), 1.5 * n))
    axes = np.atleast_2d(axes)
    for r, (site, s, t) in enumerate(rows):
        for c in range(n_images):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(s["thumb_rows"]):
                ax.imshow(t[s["thumb_rows"][c]])
                ax.set_title(f"{s['example_codes'][c]:.2f}", fontsize=6)
        ax = axes[r, -1]
        ax.axis("off")
        words = ", ".join(
            f"{w} ({v:.2f})" for w, v in zip(s["words"][:4], s["word_codes"][:4], strict=False)
        )
        concept = f" [{', '.join(s['concepts'])}]" if s.get("concepts") else ""
        ax.text(
            0, 0.5, f"{site} latent {s['latent']}{concept}\nwords: {words}", fontsize=6, va="center"
        )
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no shared latents", ha="center")
    fig.suptitle("shared latents: top images (max code) and top words (mean code)", fontsize=8)
    _save(fig, paths)


def crossmodal_report(
    sites: Sequence[str],
    summaries: Sequence[str | Path],
    latents: Sequence[str | Path],
    concepts: Sequence[str | Path],
    shared: Sequence[str | Path],
    thumbnails: Sequence[str | Path],
    outputs: Mapping[str, str | Path],
) -> pd.DataFrame:
    """crossmodal.csv and the three figures from every site's crossmodal statistics.

    sites: "{model}/L{layer}/{sae name}" per site; the file lists are per site in that order
    (summary.csv, latents.csv, concepts.csv (empty file: no concepts), shared.json,
    thumbnails.npy of (n, H, W, 3) uint8 images). outputs: "table", and "score", "overlap" and
    "shared" each with "_png" and "_pdf". Returns the table (`crossmodal_table`).
    """
    sites = list(sites)
    summary_frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in summaries]
    latent_frames = [pd.read_csv(p) for p in latents]
    concept_frames = [
        pd.read_csv(p) if Path(p).read_text().strip() else pd.DataFrame() for p in concepts
    ]
    shared_rows = [json.loads(Path(p).read_text()) for p in shared]
    thumbs = [np.load(p) for p in thumbnails]
    table = crossmodal_table(sites, summary_frames)
    atomic_write_csv(outputs["table"], table)
    plot_modality_scores(sites, latent_frames, [outputs["score_png"], outputs["score_pdf"]])
    plot_concept_overlap(
        sites, concept_frames, [outputs["overlap_png"], outputs["overlap_pdf"]], summary_frames
    )
    plot_shared_latents(sites, shared_rows, thumbs, [outputs["shared_png"], outputs["shared_pdf"]])
    log.info("summary:\n%s", table[table["concept"].fillna("") == ""].to_string())
    return table
