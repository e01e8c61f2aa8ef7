"""Figures of the diffusion tasks: steering grids and curves, attribute-discovery grids."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import is_color_like


def _image(ax: plt.Axes, img: np.ndarray | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if img is not None:
        ax.imshow(img, interpolation="nearest")


def image_rows(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    col_labels: Sequence[str],
    title: str,
) -> plt.Figure:
    """A grid of uint8 images (H, W, 3): rows of (label, images), columns labelled."""
    n_rows = max(1, len(rows))
    n_cols = max(1, len(col_labels))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(0.9 * n_cols + 2.6, 0.9 * n_rows + 0.8), squeeze=False
    )
    for r in range(n_rows):
        label, images = rows[r] if r < len(rows) else ("", [])
        for c in range(n_cols):
            _image(axes[r, c], images[c] if c < len(images) else None)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    for c, text in enumerate(col_labels):
        axes[0, c].set_title(text, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def steering_grid(
    images: dict[str, np.ndarray],
    concepts: Sequence[str],
    prompts: Sequence[str],
    n_seeds: int,
    strengths: Sequence[float],
    sae: str,
) -> plt.Figure:
    """Prompt x strength grid per concept (first seed). images[concept]: (K, P*S, H, W, 3)."""
    rows = []
    for c in concepts:
        for p, prompt in enumerate(prompts):
            rows.append(
                (f"{c} | {prompt}", [images[c][k, p * n_seeds] for k in range(len(strengths))])
            )
    labels = [f"strength {s:g}" for s in strengths]
    return image_rows(rows, labels, f"Steering with SAE latents ({sae}), seed 0")


def concept_palette(concepts: Sequence[str]) -> dict[str, object]:
    """A colour per concept: the concept's own colour when it names one, else a default."""
    others = iter(sns.color_palette("tab10", len(concepts)))
    out = {}
    for c in concepts:
        fallback = next(others)
        out[c] = c if is_color_like(c) else fallback
    return out


def effect_curves(table: pd.DataFrame, column: str, ylabel: str, title: str) -> plt.Figure:
    """`column` against strength, one line per concept (mean, band = sd over prompts x seeds)
    and the individual images as points; one panel per SAE."""
    saes = list(dict.fromkeys(table["sae"]))
    fig, axes = plt.subplots(1, len(saes), figsize=(5.5 * len(saes), 4), squeeze=False)
    for ax, sae in zip(axes[0], saes, strict=True):
        sub = table[(table["sae"] == sae) & table[column].notna()]
        if sub.empty:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
            continue
        palette = concept_palette(list(dict.fromkeys(sub["concept"])))
        sns.lineplot(
            data=sub,
            x="strength",
            y=column,
            hue="concept",
            palette=palette,
            errorbar="sd",
            marker="o",
            ax=ax,
        )
        sns.stripplot(
            data=sub,
            x="strength",
            y=column,
            hue="concept",
            palette=palette,
            native_scale=True,
            dodge=False,
            alpha=0.25,
            size=2.5,
            legend=False,
            ax=ax,
        )
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("strength (multiples of the latent's typical activation)")
        ax.set_ylabel(ylabel)
        ax.set_title(sae, fontsize=9)
        ax.legend(fontsize=7, ncol=2, title="concept", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def steering_effect(table: pd.DataFrame, world: bool) -> plt.Figure:
    """Effect (CLIP score change) vs strength; with the world, also the colour measurement."""
    if not world:
        return effect_curves(
            table, "effect", "CLIP score change vs unsteered", "Steering effect vs strength"
        )
    long = pd.concat(
        [
            table.assign(measure="CLIP score change", value=table["effect"]),
            table.assign(measure="colour fraction change", value=table["colour_effect"]),
        ],
        ignore_index=True,
    )
    long = long[long["value"].notna()]
    measures = list(dict.fromkeys(long["measure"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(5.5 * len(measures), 4), squeeze=False)
    for ax, m in zip(axes[0], measures, strict=True):
        sub = long[long["measure"] == m]
        sns.lineplot(
            data=sub,
            x="strength",
            y="value",
            hue="concept",
            palette=concept_palette(list(dict.fromkeys(sub["concept"]))),
            errorbar="sd",
            marker="o",
            ax=ax,
        )
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("strength (multiples of the latent's typical activation)")
        ax.set_ylabel(m + " vs unsteered")
        ax.legend(fontsize=7, ncol=2, title="concept", title_fontsize=7)
    fig.suptitle(
        f"Steering effect vs strength ({', '.join(dict.fromkeys(table['sae']))}; "
        "mean ± sd over prompts x seeds)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def attribute_grid(
    table: pd.DataFrame,
    images: dict[str, np.ndarray],
    n_pairs: int = 4,
    max_rows: int = 12,
) -> plt.Figure:
    """Per latent (kept ones first, by rank; then the others by effect x consistency): without /
    with image pairs for the first (prompt, seed) pairs."""
    kept = table.assign(_k=~table["kept"].astype(bool))
    kept = kept.sort_values(["_k", "score"], ascending=[True, False]).head(max_rows)
    rows = []
    base = images["base"]
    for _, r in kept.iterrows():
        with_img = images[f"latent_{int(r['latent'])}"]
        pair = []
        for j in range(min(n_pairs, len(base))):
            pair += [base[j], with_img[j]]
        rank = "not kept" if pd.isna(r["rank"]) else f"#{int(r['rank'])}"
        rows.append(
            (
                f"{rank} latent {int(r['latent'])}: {r['attribute']}\n"
                f"effect {r['effect']:.3f}, cons. {r['consistency']:.2f}",
                pair,
            )
        )
    labels = [lab for j in range(n_pairs) for lab in (f"pair {j + 1}: without", "with")]
    return image_rows(rows, labels, f"Automatically discovered attributes ({table['sae'].iloc[0]})")


def samples_grid(
    grid: np.ndarray, shapes: Sequence[str], colours: Sequence[str], summary: str
) -> plt.Figure:
    """grid: (n_shapes, n_colours, n_seeds, H, W, 3); seed 0 of every "a {colour} {shape}"."""
    rows = [
        (f"a ... {s}", [grid[i, j, 0] for j in range(len(colours))]) for i, s in enumerate(shapes)
    ]
    return image_rows(
        rows, list(colours), f"World diffusion model, prompt 'a {{colour}} {{shape}}'\n{summary}"
    )


CONDITION_LABELS = {
    "latent": "concept latent (measured)",
    "text_direction": "text direction (positive)",
    "random_latent": "random latent (negative)",
    "random_direction": "random direction (reference)",
}


def steering_controls_figure(controls: pd.DataFrame) -> plt.Figure:
    """Left: each concept's own CLIP-score change at the largest strength under the concept
    latent, the controls and the norm-matched random direction (mean ± 95% CI over prompts x
    seeds). Right: the concept latents' specificity matrix (steered x scored concept)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), squeeze=False)
    if controls.empty:
        fig.suptitle("Steering controls: not run", fontsize=9)
        return fig
    sae = controls.loc[controls["primary"].astype(bool), "sae"]
    sae = sae.iloc[0] if len(sae) else controls["sae"].iloc[0]
    sub = controls[controls["sae"] == sae]
    own = sub[sub["scored"] == sub["concept"]].assign(
        condition=lambda t: t["condition"].map(CONDITION_LABELS).fillna(t["condition"])
    )
    order = [c for c in CONDITION_LABELS.values() if c in set(own["condition"])]
    sns.pointplot(
        data=own,
        x="concept",
        y="effect",
        hue="condition",
        hue_order=order,
        dodge=0.5,
        linestyle="none",
        errorbar=("ci", 95),
        ax=axes[0, 0],
    )
    axes[0, 0].axhline(0, color="grey", lw=0.8, ls=":")
    axes[0, 0].set_ylabel("own-concept CLIP score change vs unsteered")
    axes[0, 0].legend(fontsize=7)
    lat = sub[sub["condition"] == "latent"]
    matrix = lat.pivot_table(index="concept", columns="scored", values="effect", aggfunc="mean")
    sns.heatmap(matrix, cmap="RdBu_r", center=0, annot=True, fmt=".2f", ax=axes[0, 1])
    axes[0, 1].set_xlabel("scored concept")
    axes[0, 1].set_ylabel("steered concept (its latent)")
    fig.suptitle(f"Steering controls ({sae}, strength {sub['strength'].iloc[0]:g})", fontsize=9)
    fig.tight_layout()
    return fig
