"""RESULTS.md: the study's claims, one by one, with what this run measured.

Each claim has a decision rule fixed here, before any number is seen; the summary applies it
to the tables of the output contract and says "holds", "does not hold" or "not run".
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from saeprobe.io import atomic_write_text

log = logging.getLogger(__name__)

HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"


@dataclass
class Claim:
    claim: str
    table: str
    figures: list[str]
    rule: str
    measured: str = ""
    verdict: str = NOT_RUN


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def sae_quality(t: pd.DataFrame) -> tuple[str, str]:
    best = t.sort_values("nmse").groupby(["model", "layer"], sort=False).head(1)
    ok = (best["nmse"] <= 0.2) & (best["downstream_recovered"].fillna(1.0) >= 0.9)
    lines = [
        f"{r.model} layer {r.layer}: best {r.sae.rsplit('/', 1)[-1]} NMSE {_fmt(r.nmse)}, "
        f"L0 {_fmt(r.l0)}, downstream recovered {_fmt(r.downstream_recovered)}"
        for r in best.itertuples()
    ]
    return "; ".join(lines), HOLDS if ok.all() else FAILS


def semantics(t: pd.DataFrame) -> tuple[str, str]:
    sae = t[t["features"] != "raw"].groupby("site")["purity"].median()
    raw = t[t["features"] == "raw"].groupby("site")["purity"].median()
    named = t[(t["features"] != "raw") & t["name"].notna() & (t["name"] != "")]
    lines = [
        f"{site}: median leaf purity SAE {_fmt(sae[site])} vs raw {_fmt(raw.get(site))}"
        for site in sae.index
    ]
    lines.append(
        f"{len(named)} SAE latents named, e.g. {', '.join(named['name'].value_counts().index[:6])}"
    )
    wins = sum(sae[s] > raw.get(s, np.inf) for s in sae.index)
    return "; ".join(lines), HOLDS if wins > len(sae) / 2 else FAILS


def ood_detection(t: pd.DataFrame) -> tuple[str, str]:
    mean = t.groupby(["model", "site", "features", "score"])["auroc"].mean().reset_index()
    lines, wins, n = [], 0, 0
    for (model, site), g in mean.groupby(["model", "site"]):
        raw = g[g["features"] == "raw"].sort_values("auroc").iloc[-1]
        sae = g[g["features"] != "raw"].sort_values("auroc").iloc[-1]
        lines.append(
            f"{model} {site}: best SAE score {sae.features}/{sae.score} "
            f"mean AUROC {_fmt(sae.auroc)} "
            f"vs best raw baseline {raw.score} {_fmt(raw.auroc)}"
        )
        wins += sae.auroc >= raw.auroc
        n += 1
    return "; ".join(lines), HOLDS if wins > n / 2 else FAILS


def ood_generalization(t: pd.DataFrame) -> tuple[str, str]:
    full = t[t["k"].astype(str) == "all"]
    id_sets = set(full["test_dataset"].iloc[:1])
    shifted = full[~full["test_dataset"].isin(id_sets)]
    if shifted.empty:
        return "no shifted test set configured", NOT_RUN
    mean = shifted.groupby(["model", "site", "features"])["accuracy"].mean().reset_index()
    lines, wins, n = [], 0, 0
    for (model, site), g in mean.groupby(["model", "site"]):
        raw = g[g["features"] == "raw"]["accuracy"].iloc[0]
        sae = g[g["features"] != "raw"].sort_values("accuracy").iloc[-1]
        lines.append(
            f"{model} {site}: mean shifted-set accuracy best SAE ({sae.features}) "
            f"{_fmt(sae.accuracy)} vs raw {_fmt(raw)}"
        )
        wins += sae.accuracy > raw
        n += 1
    return "; ".join(lines), HOLDS if wins > n / 2 else FAILS


def ontology(t: pd.DataFrame) -> tuple[str, str]:
    v = t.pivot_table(
        index=["model", "site", "features"], columns="metric", values="value"
    ).reset_index()
    lines, wins, n = [], 0, 0
    for (model, site), g in v.groupby(["model", "site"]):
        base = g[g["features"].isin(["raw", "pca", "random"])].set_index("features")
        sae = g[~g["features"].isin(["raw", "pca", "random"])].sort_values("frac_pure").iloc[-1]
        lines.append(
            f"{model} {site}: pure units {sae.features} {_fmt(sae.frac_pure)} vs raw "
            f"{_fmt(base.frac_pure.get('raw'))}, PCA {_fmt(base.frac_pure.get('pca'))}, random "
            f"{_fmt(base.frac_pure.get('random'))}; "
            f"internal-node coverage {_fmt(sae.coverage_internal)} "
            f"vs random {_fmt(base.coverage_internal.get('random'))}"
        )
        wins += sae.frac_pure > base["frac_pure"].max()
        n += 1
    return "; ".join(lines), HOLDS if wins > n / 2 else FAILS


CLAIMS: list[tuple[Claim, Callable[[pd.DataFrame], tuple[str, str]]]] = [
    (
        Claim(
            "SAEs reconstruct faithfully",
            "sae_quality.csv",
            [],
            "at every site the best SAE has NMSE <= 0.2 and recovers >= 90% of downstream accuracy",
        ),
        sae_quality,
    ),
    (
        Claim(
            "SAE features are semantically meaningful",
            "semantics.csv",
            ["semantics_purity.png", "semantics_grid_*.png"],
            "median leaf-label purity of SAE latents' top images beats raw neurons at most sites",
        ),
        semantics,
    ),
    (
        Claim(
            "SAE features support OOD detection",
            "ood_detection.csv",
            ["ood_detection_auroc.png"],
            "at most sites the best SAE score's mean AUROC over OOD sets matches or beats the "
            "best raw baseline",
        ),
        ood_detection,
    ),
    (
        Claim(
            "SAE features improve OOD generalization",
            "ood_generalization.csv",
            ["ood_generalization_accuracy.png", "ood_generalization_topk.png"],
            "at most sites a probe on the best SAE's codes beats the raw probe on the shifted "
            "sets (mean)",
        ),
        ood_generalization,
    ),
    (
        Claim(
            "SAE features recover the model's ontology",
            "ontology.csv",
            ["ontology_coverage.png", "ontology_heights.png"],
            "at most sites the best SAE has more pure units (LCH below the root) than raw "
            "neurons, PCA and random directions",
        ),
        ontology,
    ),
]


def steering(t: pd.DataFrame) -> tuple[str, str]:
    top = t[t["strength"] == t["strength"].max()]
    lines, wins = [], 0
    stats = top.groupby("concept")["effect"].agg(["mean", "std", "count"])
    for concept, r in stats.iterrows():
        low = r["mean"] - 1.96 * (r["std"] if np.isfinite(r["std"]) else 0.0) / np.sqrt(r["count"])
        wins += low > 0
        lines.append(f"{concept} {_fmt(r['mean'])} (95% CI low {_fmt(low)})")
    preservation = top["preservation"].mean()
    text = (
        f"CLIP-score effect at strength {top['strength'].max():g} (mean over prompts and seeds): "
        + ", ".join(lines)
        + f"; preservation {_fmt(preservation)}"
    )
    return text, HOLDS if wins > len(stats) / 2 else FAILS


def attributes(t: pd.DataFrame) -> tuple[str, str]:
    kept = t[t["kept"].astype(str) == "True"].sort_values("rank")
    if kept.empty:
        return f"no latent kept out of {len(t)} tried", FAILS
    names = ", ".join(f"#{r.latent} {r.attribute}" for r in kept.head(8).itertuples())
    text = f"{len(kept)} of {len(t)} latents kept with a consistent effect; top: {names}"
    if "input_concept" in kept and kept["input_concept"].astype(str).ne("").any():
        agree = float((kept["attribute"] == kept["input_concept"]).mean())
        text += f"; named as the concept their inputs carry: {_fmt(agree)}"
        return text, HOLDS if agree >= 0.5 else FAILS
    return text, HOLDS


def crossmodal(t: pd.DataFrame) -> tuple[str, str]:
    rows = t[(t["metric"] == "concept_overlap") & t["concept"].isna()]
    shared = t[t["metric"] == "frac_shared"].set_index("layer")["value"]
    lines, wins = [], 0
    for r in rows.itertuples():
        beats = np.isfinite(r.null_hi) and r.value > r.null_hi
        wins += beats
        lines.append(
            f"layer {r.layer}: mean concept overlap {_fmt(r.value)} vs null {_fmt(r.null_value)} "
            f"(95% band up to {_fmt(r.null_hi)}), latents firing on both modalities "
            f"{_fmt(shared.get(r.layer, np.nan))}"
        )
    return "; ".join(lines), HOLDS if rows.shape[0] and wins > len(rows) / 2 else FAILS


TASK_CLAIMS: list[tuple[Claim, Callable[[pd.DataFrame], tuple[str, str]]]] = [
    (
        Claim(
            "SAEs on the text encoder steer generation",
            "steering.csv",
            ["steering_effect.png", "steering_grid.png"],
            "for most concepts the CLIP-score effect at the largest strength is above 0 "
            "(lower end of its 95% interval over prompts and seeds)",
        ),
        steering,
    ),
    (
        Claim(
            "An automated pipeline discovers human-interpretable attributes",
            "attributes.csv",
            ["attributes_grid.png"],
            "at least one latent is kept with a consistent effect and, where the latent's input "
            "concept is known, most kept latents are named after it",
        ),
        attributes,
    ),
    (
        Claim(
            "SAE features are shared across vision and language",
            "crossmodal.csv",
            ["crossmodal_concept_overlap.png", "crossmodal_modality_score.png"],
            "at most layers the mean concept overlap of image- and word-token latents exceeds "
            "the 95% band of the shuffled-pairs null",
        ),
        crossmodal,
    ),
]


def extra_claims() -> list[tuple[Claim, Callable[[pd.DataFrame], tuple[str, str]]]]:
    return TASK_CLAIMS


def summarise(tables: Mapping[str, Path]) -> list[Claim]:
    """Apply every claim's rule to the tables present (file name -> path)."""
    out = []
    for claim, judge in CLAIMS + extra_claims():
        path = tables.get(claim.table)
        if path is not None and Path(path).is_file():
            claim.measured, claim.verdict = judge(pd.read_csv(path))
        out.append(claim)
    return out


def render(claims: list[Claim], setting: str) -> str:
    lines = [
        "# Results",
        "",
        f"Generated by the pipeline from `tables/` ({setting}). Each claim of the study is "
        "judged by a rule fixed in `saeprobe.summary` before the run; the figures and the full "
        "tables are in `report.html`. Paths are relative to this file.",
        "",
        "| claim | verdict | rule |",
        "|---|---|---|",
    ]
    lines += [f"| {c.claim} | **{c.verdict}** | {c.rule} |" for c in claims]
    for c in claims:
        lines += ["", f"## {c.claim}: {c.verdict}", "", f"- Table: `tables/{c.table}`"]
        if c.figures:
            lines.append("- Figures: " + ", ".join(f"`figures/{f}`" for f in c.figures))
        lines.append(f"- Rule: {c.rule}.")
        lines.append(f"- Measured: {c.measured or 'the task is not configured in this run.'}")
    return "\n".join(lines) + "\n"


def write_results(tables: Sequence[str | Path], setting: str, out: str | Path) -> list[Claim]:
    """Judge every claim on the run's tables (CSV paths, looked up by file name) and write
    RESULTS.md (`render`) to `out`; each verdict is also logged."""
    claims = summarise({Path(p).name: Path(p) for p in tables})
    for claim in claims:
        log.info("%s: %s (%s)", claim.claim, claim.verdict, claim.measured)
    atomic_write_text(out, render(claims, setting))
    return claims


def write_figures_index(figures: Sequence[str | Path], out: str | Path) -> int:
    """Write an HTML page at `out` showing every PNG of `figures` (sorted; paths relative to
    the page's directory, each with a link to the PDF next to it). Returns the figure count."""
    out = Path(out)
    items = []
    for png in sorted(Path(p) for p in figures):
        rel = html.escape(png.relative_to(out.parent).as_posix())
        pdf = rel.removesuffix(".png") + ".pdf"
        items.append(
            f'<figure><img src="{rel}" alt="{rel}"><figcaption>{rel} '
            f'(<a href="{pdf}">PDF</a>)</figcaption></figure>'
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>saeprobe figures</title>"
        "<style>img{max-width:100%}figure{margin:2em 0}</style>"
        f"<h1>saeprobe figures ({len(items)})</h1>\n" + "\n".join(items) + "\n"
    )
    atomic_write_text(out, page)
    log.info("%d figures", len(items))
    return len(items)
