"""Task steering: add a text-encoder SAE latent's decoder direction, measure what changes.

Per SAE of the diffusion model's text encoder, each concept's latent is the one whose code
differs most between the training prompts that contain the concept word and those that do
not; generation is steered with it at several strengths (saeprobe.diffusion.steering), and
the images are scored against every concept (CLIP) and, in the world, by pixel colour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows
from saeprobe.diffusion.experiment import Experiment, run_steering_experiment, world_colours
from saeprobe.io import atomic_path, atomic_write_csv, atomic_write_json
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import (
    effect_curves,
    steering_controls_figure,
    steering_effect,
    steering_grid,
)
from saeprobe.stats import Estimate, bootstrap

# case -> the condition whose own-concept effect is compared with the random direction's.
# The negative is the other concepts' latents scored on this concept (`mismatched_effects`):
# by construction not about it. A random SAE latent is reported beside, not judged: it is a
# real feature of the encoder and may legitimately move a concept's score.
CASE_CONDITIONS = {
    MEASURED: "latent",
    POSITIVE: "text_direction",
    NEGATIVE: "mismatched_latent",
    "reported:random_latent": "random_latent",
}
REFERENCE = "random_direction"


def own_effects(controls: pd.DataFrame, condition: str, column: str = "effect") -> pd.DataFrame:
    """Per (concept, prompt, seed) the condition's change of its own concept's score minus the
    random direction's (column `diff`), from the long controls table of one SAE (columns
    condition, concept, prompt, seed, scored and `column`)."""
    own = controls[controls["scored"] == controls["concept"]]
    keys = ["concept", "prompt", "seed"]
    a = own[own["condition"] == condition].set_index(keys)[column]
    b = own[own["condition"] == REFERENCE].set_index(keys)[column]
    both = pd.concat({"steered": a, "reference": b}, axis=1, join="inner").dropna()
    return both.assign(diff=both["steered"] - both["reference"]).reset_index()


def mismatched_effects(controls: pd.DataFrame, column: str = "effect") -> pd.DataFrame:
    """Per (concept, prompt, seed) the mean change of the concept's score when steering with
    the latents of the OTHER concepts, minus the random direction's change of it (column
    `diff`), from the long controls table of one SAE."""
    keys = ["concept", "prompt", "seed"]
    steered = controls[
        (controls["condition"] == "latent") & (controls["scored"] != controls["concept"])
    ]
    steered = steered[steered["scored"].isin(set(controls["concept"]))]
    a = steered.groupby(["scored", "prompt", "seed"])[column].mean()
    a.index = a.index.set_names(keys)
    own = controls[
        (controls["condition"] == REFERENCE) & (controls["scored"] == controls["concept"])
    ]
    b = own.set_index(keys)[column]
    both = pd.concat({"steered": a, "reference": b}, axis=1, join="inner").dropna()
    return both.assign(diff=both["steered"] - both["reference"]).reset_index()


def specificity_matrix(controls: pd.DataFrame, condition: str = "latent") -> pd.DataFrame:
    """Steered concept x scored concept: mean CLIP-score change over prompts and seeds."""
    sub = controls[controls["condition"] == condition]
    return sub.pivot_table(index="concept", columns="scored", values="effect", aggfunc="mean")


def _specificity_units(controls: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Per (concept, prompt, seed): own-concept effect minus the mean effect on the others."""
    sub = controls[controls["condition"] == condition]
    own = sub["scored"] == sub["concept"]
    keys = ["concept", "prompt", "seed"]
    diag = sub[own].set_index(keys)["effect"]
    off = sub[~own].groupby(keys)["effect"].mean()
    top = sub.loc[sub.groupby(keys)["effect"].idxmax()].set_index(keys)["scored"]
    out = pd.concat({"diag": diag, "off": off, "top": top}, axis=1, join="inner").reset_index()
    return out.assign(spec=out["diag"] - out["off"], hit=out["top"] == out["concept"])


def concept_mean(x: np.ndarray, g: np.ndarray) -> float:
    """Mean over concepts of the per-concept mean of x (n,); g (n,): each row's concept."""
    return float(np.mean([x[g == k].mean() for k in np.unique(g)]))


def case_estimates(controls: pd.DataFrame, condition: str, seed: int) -> dict[str, Estimate]:
    """The steering statistics of one condition (one SAE's controls table): effect_minus_random
    (judged) = mean over concepts of the mean paired (prompt, seed) difference of own-concept
    CLIP-score change vs the norm-matched random direction, bootstrap over (prompt, seed) units
    within concepts; beside it (not judged) the same for the pixel fraction of colour concepts
    and for specificity (own-concept change minus the mean change of the other concepts; the
    random direction's is subtracted because scored concepts differ in how any change moves
    them), and the fraction of images whose largest change is the steered concept."""
    nan = Estimate(math.nan)
    out: dict[str, Estimate] = {}
    for name, column in (
        ("effect_minus_random", "effect"),
        ("colour_minus_random", "colour_effect"),
    ):
        if condition == "mismatched_latent":
            d = mismatched_effects(controls, column) if column in controls else pd.DataFrame()
        else:
            d = own_effects(controls, condition, column)
        if d.empty:
            out[name] = nan
            continue
        g = d["concept"].to_numpy()
        out[name] = bootstrap(concept_mean, [d["diff"].to_numpy(), g], seed, strata=g)
    if condition == "mismatched_latent":
        return out
    units = _specificity_units(controls, condition)
    ref = _specificity_units(controls, REFERENCE)
    keys = ["concept", "prompt", "seed"]
    paired = units.merge(ref[[*keys, "spec"]], on=keys, suffixes=("", "_ref"))
    if units.empty or paired.empty:
        out["specificity_minus_random"] = out["top_is_steered"] = nan
        return out
    g = paired["concept"].to_numpy()
    d = (paired["spec"] - paired["spec_ref"]).to_numpy()
    out["specificity_minus_random"] = bootstrap(concept_mean, [d, g], seed, strata=g)
    out["top_is_steered"] = Estimate(float(units["hit"].mean()))
    out["n_concepts"] = Estimate(float(units["concept"].nunique()))
    return out


# One-sided level of each test of `rises_with_strength`, fixed before any run was read.
RISE_ALPHA = 0.05


@dataclass(frozen=True)
class Rise:
    """Whether one latent's effect rises with strength (`rises_with_strength`). Steps are the
    changes from one strength to the next; bounds are one-sided (1 - alpha) t bounds of the
    mean over units."""

    monotone: bool
    strict: bool
    n_units: int
    worst_step: float
    worst_step_upper: float
    top_minus_base: float
    top_minus_base_lower: float


def rises_with_strength(effects: np.ndarray, alpha: float = RISE_ALPHA) -> Rise:
    """Whether a latent's effect rises monotonically with strength, judged against its own
    noise. effects: (n_units, n_strengths), one row per (prompt, seed), strengths ascending
    (the first is the unsteered base); every unit is seen at every strength, so differences
    are paired and prompt and seed effects cancel.

    monotone: no step falls significantly (for every step, the upper one-sided 1 - alpha
    t bound of the mean paired step stays >= 0) and the top strength is significantly above
    the base (its lower bound > 0). Each step is tested at alpha without a multiplicity
    correction: a correction would make a fall harder to detect, so the rule errs towards
    "not monotone". A fall smaller than about (t_{1-alpha} + t_{0.8}) * sd / sqrt(n) cannot be
    resolved from n units. strict: the earlier rule, no mean step below 0 at all."""
    e = np.asarray(effects, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] < 2:
        raise ValueError(f"effects: expected (n_units, n_strengths >= 2), got {e.shape}")
    n = e.shape[0]
    steps = np.diff(e, axis=1)  # (n, K - 1)
    top = e[:, -1] - e[:, 0]  # (n,)
    mean_steps = steps.mean(0)
    worst = int(np.argmin(mean_steps))
    if n < 2:
        nan = math.nan
        return Rise(False, bool((mean_steps >= 0).all()), n, float(mean_steps[worst]), nan,
                    float(top.mean()), nan)  # fmt: skip
    k = float(stats.t.ppf(1 - alpha, n - 1))
    upper = mean_steps + k * steps.std(0, ddof=1) / math.sqrt(n)
    lower_top = top.mean() - k * top.std(ddof=1) / math.sqrt(n)
    return Rise(
        monotone=bool((upper >= 0).all() and lower_top > 0),
        strict=bool((mean_steps >= 0).all()),
        n_units=n,
        worst_step=float(mean_steps[worst]),
        worst_step_upper=float(upper[worst]),
        top_minus_base=float(top.mean()),
        top_minus_base_lower=float(lower_top),
    )


def monotone_table(table: pd.DataFrame, alpha: float = RISE_ALPHA) -> pd.DataFrame:
    """Per steered latent (sae, concept, latent) of a steering table (columns sae, latent,
    concept, strength, prompt, seed, effect), `rises_with_strength` over its (prompt, seed)
    units, in columns sae, concept, latent, then Rise's fields. Units missing a strength are
    left out."""
    rows = []
    for (sae, concept, latent), g in table.groupby(["sae", "concept", "latent"], sort=False):
        wide = g.pivot_table(index=["prompt", "seed"], columns="strength", values="effect")
        wide = wide.sort_index(axis=1).dropna()
        rise = rises_with_strength(wide.to_numpy(), alpha)
        rows.append({"sae": sae, "concept": concept, "latent": int(latent), **asdict(rise)})
    columns = ["sae", "concept", "latent", *Rise.__dataclass_fields__]
    return pd.DataFrame(rows, columns=columns)


def steering_evidence(controls: pd.DataFrame, primary: str | None, seed: int) -> list[dict]:
    """Evidence rows of the steering claim from the controls table (`steering_controls` rows of
    every SAE; column `primary` marks the judged SAE). Site: `{model}/{site}` of the SAE id."""
    rows: list[dict] = []
    if controls.empty:
        return rows
    for sae, sub in controls.groupby("sae", sort=False):
        site, name = str(sae).rsplit("/", 1)
        judged = bool(sub["primary"].iloc[0]) if "primary" in sub else name == primary
        cases = CASE_CONDITIONS if judged else {f"{SENSITIVITY}{name}": "latent"}
        for case, condition in cases.items():
            source = "latent" if condition == "mismatched_latent" else condition
            if not (sub["condition"] == source).any():
                continue
            strength = sub["strength"].iloc[0] if "strength" in sub else math.nan
            what = "other concepts' latents" if condition == "mismatched_latent" else condition
            note = f"{what} vs norm-matched random direction, strength {strength:g}"
            rows += evidence_rows(
                "steering", site, case, case_estimates(sub, condition, seed), note
            )
    return rows


def write_strips(
    path: str,
    images: Mapping[str, np.ndarray],
    sae: str,
    concepts: Mapping[str, Mapping[str, Any]],
    strengths: list[float],
    prompt: str,
) -> None:
    """The latent atlas's steering strips of one SAE, an .npz: images (n, K, H, W, 3) uint8,
    each steered concept's first prompt and seed at every strength; latents (n,), concepts (n,),
    strengths (K,), sae and prompt (0-d strings).

    images: `run_steering`'s {concept: (K, P*S, H, W, 3)}; concepts: the SAE's chosen latents."""
    names = [c for c in concepts if c in images]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            images=np.stack([np.asarray(images[c])[:, 0] for c in names]).astype(np.uint8),
            latents=np.array([int(concepts[c]["latent"]) for c in names], dtype=np.int64),
            concepts=np.array(names, dtype=str),
            strengths=np.asarray(strengths, dtype=np.float64),
            sae=np.array(sae),
            prompt=np.array(prompt),
        )


def steering_task(
    exp: Experiment,
    settings: Mapping[str, Any],
    out: Mapping[str, str],
    primary: str | None = None,
    seed: int = 0,
) -> list[dict]:
    """Run steering (settings: `diffusion.steering`) and write `out`: table, latents (JSON),
    strips (`write_strips`, where `out` names it), controls and specificity tables, grid,
    effect, controls and preservation figures (PNG, and `*_pdf`). Returns the claim's evidence
    rows."""
    colours = world_colours(exp.vocab) if exp.world else None
    device = exp.pipe.text_encoder.device
    table, chosen, images, controls = run_steering_experiment(
        exp.pipe,
        exp.saes,
        settings,
        exp.generation,
        exp.scorer,
        colours,
        device,
        exp.gate,
        primary,
        seed,
    )
    atomic_write_csv(out["table"], table)
    atomic_write_csv(out["controls"], controls)
    if "monotone" in out:
        atomic_write_csv(out["monotone"], monotone_table(table))
    spec = (
        [
            specificity_matrix(g, cond)
            .reset_index()
            .melt(id_vars="concept", value_name="effect")
            .assign(sae=sae, condition=cond)
            for sae, g in controls.groupby("sae", sort=False)
            for cond in dict.fromkeys(g["condition"])
        ]
        if not controls.empty
        else []
    )
    atomic_write_csv(
        out["specificity"],
        pd.concat(spec, ignore_index=True)
        if spec
        else pd.DataFrame(columns=["sae", "condition", "concept", "scored", "effect"]),
    )
    atomic_write_json(out["latents"], chosen)
    if "strips" in out and len(table):
        first = table["sae"].iloc[0]
        write_strips(
            out["strips"], images, first, chosen[first], settings["strengths"],
            settings["prompts"][0],
        )  # fmt: skip
    steered = set(table["concept"])
    grid_concepts = [c for c in settings["grid_concepts"] if c in steered]
    fig = steering_grid(
        images,
        grid_concepts,
        settings["prompts"],
        len(settings["seeds"]),
        settings["strengths"],
        table["sae"].iloc[0],
    )
    save_figure(fig, out["grid"], out["grid_pdf"])
    save_figure(steering_effect(table, exp.world), out["effect"], out["effect_pdf"])
    fig = effect_curves(
        table,
        "preservation",
        "image-embedding cosine to unsteered",
        "Preservation vs strength (mean ± sd over prompts x seeds; points: images)",
    )
    save_figure(fig, out["preservation"], out["preservation_pdf"])
    save_figure(steering_controls_figure(controls), out["controls_fig"], out["controls_fig_pdf"])
    return steering_evidence(controls, primary, seed)
