"""The verdicts at a glance: each claim's primary statistic for the measured case beside its
positive and negative controls, with intervals and the pre-registered threshold."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saeprobe.claims import CLAIMS, MEASURED, NEGATIVE, POSITIVE

CASE_STYLE = {
    MEASURED: ("measured", "tab:blue", "o"),
    POSITIVE: ("positive control", "tab:green", "^"),
    NEGATIVE: ("negative control", "tab:red", "v"),
}


def claims_figure(evidence: pd.DataFrame, claims: pd.DataFrame) -> plt.Figure:
    """One panel per claim: rows are sites, points the primary statistic per case (with its
    interval or null band), the dashed line the test's threshold, the verdict as row label."""
    keys = [k for k in CLAIMS if (evidence["claim"] == k).any()]
    heights = [0.6 + 0.5 * _n_sites(evidence, k) for k in keys] or [1.0]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(8, sum(heights) + 0.8),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    if not keys:
        axes[0, 0].text(0.5, 0.5, "no evidence in this run", ha="center", va="center")
        axes[0, 0].axis("off")
        return fig
    for ax, key in zip(axes[:, 0], keys, strict=True):
        _panel(ax, key, evidence[evidence["claim"] == key], claims[claims["claim"] == key])
    axes[0, 0].legend(
        handles=[
            plt.Line2D([], [], color=c, marker=m, linestyle="", label=label)
            for label, c, m in CASE_STYLE.values()
        ],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.15),
        ncol=3,
        frameon=False,
    )
    fig.tight_layout()
    return fig


def _n_sites(evidence: pd.DataFrame, key: str) -> int:
    return int(evidence.loc[evidence["claim"] == key, "site"].nunique())


def _case_kind(case: str) -> str | None:
    """MEASURED, POSITIVE or NEGATIVE for a case (`negative:untrained` is a NEGATIVE); None for
    the reported-only cases (sensitivity, reported)."""
    kind = case.split(":", 1)[0]
    return kind if kind in CASE_STYLE else None


def _panel(ax: plt.Axes, key: str, ev: pd.DataFrame, verdicts: pd.DataFrame) -> None:
    claim = CLAIMS[key]
    stat = claim.primary_statistic
    ev = ev[(ev["statistic"] == stat) & ev["case"].map(_case_kind).notna()]
    sites = list(dict.fromkeys(ev["site"]))
    verdict = verdicts.set_index("site")["verdict"].to_dict()
    order = list(CASE_STYLE)
    for i, site in enumerate(sites):
        rows = ev[ev["site"] == site]
        rank = [order.index(_case_kind(c)) for c in rows["case"]]
        rows = rows.iloc[np.argsort(rank, kind="stable")]
        offsets = np.linspace(-0.3, 0.3, len(rows)) if len(rows) > 1 else [0.0]
        for y_off, (_, r) in zip(offsets, rows.iterrows(), strict=True):
            _, colour, marker = CASE_STYLE[_case_kind(r["case"])]
            y = i + y_off
            if math.isfinite(r["ci_low"]):
                ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colour, lw=2, alpha=0.6)
            ax.plot([r["value"]], [y], marker=marker, color=colour, linestyle="")
            if ":" in r["case"]:
                ax.annotate(
                    r["case"].split(":", 1)[1],
                    (r["value"], y),
                    xytext=(4, 0),
                    textcoords="offset points",
                    fontsize=6,
                    va="center",
                    color=colour,
                )
    test = claim.tests[stat]
    for x in (test.above, test.below):
        if x is not None:
            ax.axvline(x, color="grey", linestyle="--", lw=1)
    ax.set_yticks(np.arange(len(sites)))
    ax.set_yticklabels([f"{s}\n{verdict.get(s, '')}" for s in sites], fontsize=7)
    ax.invert_yaxis()
    label = stat if test.p_below is None else f"{stat} (interval: null band; judged on p)"
    ax.set_xlabel(label, fontsize=8)
    ax.set_title(claim.title, fontsize=9, loc="left")
