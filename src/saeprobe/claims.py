"""The study's claims as tests that can fail, and the evidence each task hands in for them.

A task measures, per claim and site, one or more statistics for three cases run through the
same code: `measured` (the study's case, judged on the site's primary SAE), `positive` (a case
where by construction the claim must hold) and `negative` (where it must not). A claim with
several controls of a kind names the others `positive:<label>` / `negative:<label>`: every
positive must pass and every negative must fail. Other SAEs of a sweep come in as
`sensitivity:<sae>` rows, reported and never judged. The tests below are fixed
before any number is seen: a case passes when every statistic it reports passes its test.

A site's verdict:
- `holds`: the measured case passes, the positive passes and the negative fails;
- `inconclusive (control failed)`: a positive fails or a negative passes;
- `does not hold`: the controls behave and the measured case fails;
- `not run`: the measured case has no finite statistic (e.g. a task that was not configured).
A claim holds overall when it holds at more than half of its sites; it is inconclusive when the
inconclusive sites could decide it; otherwise it does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from saeprobe.io import atomic_write_csv
from saeprobe.stats import Estimate

HOLDS, FAILS, INCONCLUSIVE, NOT_RUN = (
    "holds",
    "does not hold",
    "inconclusive (control failed)",
    "not run",
)
MEASURED, POSITIVE, NEGATIVE = "measured", "positive", "negative"
SENSITIVITY = "sensitivity:"
EVIDENCE_COLUMNS = ["claim", "site", "case", "statistic", "value", "ci_low", "ci_high", "p", "note"]


@dataclass(frozen=True)
class Test:
    """Pass when the lower CI bound (or value) exceeds `above`, the upper bound (or value)
    stays below `below`, and/or the p-value is below `p_below`; NaN never passes."""

    __test__ = False  # not a pytest class

    above: float | None = None
    below: float | None = None
    p_below: float | None = None
    on_value: bool = False

    def passes(self, e: Estimate) -> bool:
        ok = True
        if self.above is not None:
            x = e.value if self.on_value or math.isnan(e.ci_low) else e.ci_low
            ok &= math.isfinite(x) and x > self.above
        if self.below is not None:
            x = e.value if self.on_value or math.isnan(e.ci_high) else e.ci_high
            ok &= math.isfinite(x) and x < self.below
        if self.p_below is not None:
            ok &= math.isfinite(e.p) and e.p < self.p_below
        return bool(ok)

    def describe(self) -> str:
        parts = []
        bound = "value" if self.on_value else "CI"
        if self.above is not None:
            parts.append(f"{bound} > {self.above:g}")
        if self.below is not None:
            parts.append(f"{bound} < {self.below:g}")
        if self.p_below is not None:
            parts.append(f"p < {self.p_below:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    rule: str
    tests: Mapping[str, Test]
    figures: tuple[str, ...] = ()

    @property
    def primary_statistic(self) -> str:
        return next(iter(self.tests))


CLAIMS: dict[str, Claim] = {
    c.key: c
    for c in [
        Claim(
            "reconstruction",
            "SAEs reconstruct faithfully",
            "on held-out activations the primary SAE's gain over PCA with round(L0) components "
            "(NMSE_PCA - NMSE_SAE) exceeds the mean gain of the same SAE config trained on three "
            "draws of the site's Gaussian twin (same mean and covariance), i.e. the SAE exploits "
            "structure beyond the covariance (interval of the difference above 0: bootstrap over "
            "eval rows joined with the twins' training noise, a t interval); its NMSE is below 0.2 "
            "(upper CI bound), at most 30% of its latents are dead and 20% dense (active on > 10% "
            "of inputs), and it recovers over 90% of downstream accuracy where that is measured "
            "(NaN = not run, skipped); positive: a planted sparse dictionary (as many unit atoms "
            "as latents, k-sparse, the site's dimension and variance) against its own twin, "
            "which must also recover the atoms (mean best decoder cosine > 0.9); negative: a "
            "fourth Gaussian draw against the three, where no structure gain may show",
            {
                "structure_gain": Test(above=0.0),
                "nmse": Test(below=0.2),
                "downstream_recovered": Test(above=0.9, on_value=True),
                "dead_fraction": Test(below=0.3, on_value=True),
                "dense_fraction": Test(below=0.2, on_value=True),
                "atoms_recovered": Test(above=0.9, on_value=True),
            },
            ("sae_quality.png",),
        ),
        Claim(
            "semantics",
            "SAE features are semantically meaningful",
            "mean leaf-label purity of the top images of the primary SAE's latents exceeds that "
            "of norm-matched random directions of the same site (bootstrap CI of the difference "
            "above 0; raw neurons reported beside); positive: class-mean directions of the leaf "
            "labels; negatives (each must fail): the SAE's latents judged against a nuisance label "
            "with the leaf labels' frequencies and no pixel correlate, and the same measurement "
            "on an SAE of an untrained (random-init) copy of the model where one is configured",
            {"purity_minus_random": Test(above=0.0)},
            ("semantics_purity.png", "semantics_grid_*.png"),
        ),
        Claim(
            "ood_detection",
            "SAE features support OOD detection",
            "the primary score on the primary SAE's codes separates near-OOD from "
            "in-distribution images (AUROC CI above 0.5) and is not worse than the same score "
            "on raw activations by more than 0.05 (paired CI); positive: the same score detects a "
            "far-OOD split (unseen shapes, colours and backgrounds; AUROC CI above 0.5); "
            "negative: a fresh in-distribution sample taken for OOD (AUROC CI must include 0.5); "
            "a supervised oracle AUROC per set is shown",
            {
                "auroc": Test(above=0.5),
                "auroc_sae_minus_raw": Test(above=-0.05),
            },
            ("ood_detection_auroc.png",),
        ),
        Claim(
            "ood_generalization",
            "SAE features improve OOD generalization",
            "accuracy_gain = accuracy of the treated features minus the reference's, paired "
            "bootstrap CI above 0. measured: the primary SAE's codes vs raw activations, probes "
            "trained in distribution, on the shifted sets pooled; positive: superclass probes "
            "trained where colour always agrees with the superclass, on raw activations plus one "
            "planted unit per colour (reference) vs the same minus the units the automatic "
            "naming calls colour, on the conflicting test images; negative: minus as many "
            "random other units instead. Reported, not judged: the SAE's codes minus its "
            "colour-named latents vs raw and vs all its codes where colour agrees 95%",
            {"accuracy_gain": Test(above=0.0)},
            ("ood_generalization_accuracy.png", "ood_generalization_topk.png"),
        ),
        Claim(
            "ontology",
            "SAE features recover the model's ontology",
            "the primary SAE's latents' leaf profiles (mean activation per leaf class) are "
            "explained by the hierarchy's groupings better than by random trees of the same "
            "shape (ontology_score: mean variance fraction explained; permutation p < 0.05 over "
            "leaf permutations); positive: class-mean directions of the internal nodes; "
            "negative: the same latents against a fixed shuffled tree",
            {"ontology_score": Test(p_below=0.05)},
            ("ontology_coverage.png", "ontology_heights.png"),
        ),
        Claim(
            "steering",
            "SAEs on the text encoder steer generation",
            "on the primary SAE, adding a concept's latent at the largest strength raises that "
            "concept's CLIP score more than an isotropic random direction of the same norm on "
            "the same prompt and seed (mean over the concepts the generator can render, equal "
            "weight; paired bootstrap CI of the difference above 0); positive: the concept's "
            "text-embedding direction (mean activation of corpus prompts with the word minus "
            "without), same norm; negative: the latents of the other concepts, scored on this "
            "concept (by construction not about it); a random alive latent picked for no "
            "concept, the pixel-colour change, specificity over the other concepts and the "
            "top-concept rate are shown beside, not judged",
            {"effect_minus_random": Test(above=0.0)},
            ("steering_controls.png", "steering_effect.png", "steering_grid.png"),
        ),
        Claim(
            "attributes",
            "An automated pipeline discovers human-interpretable attributes",
            "among the primary SAE's kept latents (top latents by activation mass whose "
            "discovered attribute is consistent across prompts and seeds), more are named after "
            "their input concept (prompt-word contrast) than when input concepts are shuffled "
            "among them (permutation p < 0.05); positive: concepts' text-embedding directions, "
            "input concept by construction; negative: isotropic random directions of the same "
            "norm, input concept by the same contrast on their projections; the fraction of "
            "random directions kept (false-discovery rate) is shown beside",
            {"named_after_input": Test(p_below=0.05)},
            ("attributes_grid.png",),
        ),
        Claim(
            "crossmodal",
            "SAE features are shared across vision and language",
            "per layer, the top-latent overlap of image tokens and word tokens of the same "
            "concept on the primary SAE exceeds both the shuffled-pairs null and the stricter "
            "within-attribute null (red vs blue, never red vs circle; one-sided permutation "
            "p < 0.05, ties counted as extreme); positive: the same matching with both sides "
            "taken from word tokens (captions of even vs odd examples); negative: the same model "
            "trained with every image paired with another image's caption. Reported beside, not "
            "judged: the text-only control, the same captions run without their image (how much "
            "of the word side's sharing the text carries without attending to the image)",
            {
                "concept_overlap": Test(p_below=0.05),
                "concept_overlap_within_attribute": Test(p_below=0.05),
            },
            ("crossmodal_concept_overlap.png", "crossmodal_modality_score.png"),
        ),
    ]
}


def evidence_rows(
    claim: str, site: str, case: str, estimates: Mapping[str, Estimate], note: str = ""
) -> list[dict]:
    """Rows of the evidence table for one claim, site and case (statistic -> estimate)."""
    if claim not in CLAIMS:
        raise KeyError(f"unknown claim {claim!r}; known: {sorted(CLAIMS)}")
    return [
        {
            "claim": claim,
            "site": site,
            "case": case,
            "statistic": name,
            "value": e.value,
            "ci_low": e.ci_low,
            "ci_high": e.ci_high,
            "p": e.p,
            "note": note,
        }
        for name, e in estimates.items()
    ]


def case_passes(claim: Claim, rows: pd.DataFrame) -> bool | None:
    """Whether every statistic of one case passes its test (None: no statistic measured)."""
    results = []
    for r in rows.itertuples():
        test = claim.tests.get(r.statistic)
        if test is None or not math.isfinite(r.value):
            continue
        results.append(test.passes(Estimate(r.value, r.ci_low, r.ci_high, r.p)))
    return None if not results else all(results)


def is_control(case: str, kind: str) -> bool:
    """Whether `case` is a control of `kind` (POSITIVE or NEGATIVE): `kind` or `kind:<label>`."""
    return case == kind or case.startswith(kind + ":")


def controls_pass(claim: Claim, rows: pd.DataFrame, kind: str) -> bool | None:
    """Whether the controls of `kind` pass as a group (None: none measured): positives pass
    when every measured positive case passes; negatives when any measured negative case
    passes (so a site's negatives count as failed only when each of them fails)."""
    cases = [c for c in dict.fromkeys(rows["case"]) if is_control(c, kind)]
    results = [case_passes(claim, rows[rows["case"] == c]) for c in cases]
    results = [r for r in results if r is not None]
    if not results:
        return None
    return all(results) if kind == POSITIVE else any(results)


def site_verdict(measured: bool | None, positive: bool | None, negative: bool | None) -> str:
    if measured is None:
        return NOT_RUN
    if positive is not True or negative is not False:
        return INCONCLUSIVE
    return HOLDS if measured else FAILS


def overall_verdict(verdicts: Iterable[str]) -> str:
    v = [x for x in verdicts if x != NOT_RUN]
    if not v:
        return NOT_RUN
    holds, inconclusive = v.count(HOLDS), v.count(INCONCLUSIVE)
    if holds > len(v) / 2:
        return HOLDS
    if holds + inconclusive > len(v) / 2:
        return INCONCLUSIVE
    return FAILS


def judge(evidence: pd.DataFrame) -> pd.DataFrame:
    """claims.csv from the evidence table: one row per claim and site with the primary
    statistic of each case, the measured case's interval / p-value, each case's pass and the
    verdict."""
    out = []
    for (key, site), g in evidence.groupby(["claim", "site"], sort=False):
        claim = CLAIMS[key]
        passes = {
            MEASURED: case_passes(claim, g[g["case"] == MEASURED]),
            POSITIVE: controls_pass(claim, g, POSITIVE),
            NEGATIVE: controls_pass(claim, g, NEGATIVE),
        }
        stat = claim.primary_statistic
        if not (g["statistic"] == stat).any():
            stat = next((t for t in claim.tests if (g["statistic"] == t).any()), stat)
        prim = g[g["statistic"] == stat].drop_duplicates("case").set_index("case")

        def val(case: str, col: str = "value", prim: pd.DataFrame = prim) -> float:
            return float(prim.at[case, col]) if case in prim.index else float("nan")

        out.append(
            {
                "claim": key,
                "site": site,
                "statistic": stat,
                "measured": val(MEASURED),
                "positive": val(POSITIVE),
                "negative": val(NEGATIVE),
                "ci_low": val(MEASURED, "ci_low"),
                "ci_high": val(MEASURED, "ci_high"),
                "p": val(MEASURED, "p"),
                "measured_pass": passes[MEASURED],
                "positive_pass": passes[POSITIVE],
                "negative_pass": passes[NEGATIVE],
                "verdict": site_verdict(passes[MEASURED], passes[POSITIVE], passes[NEGATIVE]),
            }
        )
    return pd.DataFrame(out)


def write_evidence(
    path: str | Path, rows: Iterable[Mapping], model: str | None = None
) -> pd.DataFrame:
    """Write evidence rows (from `evidence_rows`) to `path`, columns in EVIDENCE_COLUMNS order;
    with `model`, a bare site name becomes "{model}/{site}" (sites of different models are
    judged apart)."""
    table = pd.DataFrame(list(rows), columns=EVIDENCE_COLUMNS)
    if model is not None and len(table):
        bare = ~table["site"].astype(str).str.contains("/")
        table.loc[bare, "site"] = model + "/" + table.loc[bare, "site"].astype(str)
    atomic_write_csv(path, table)
    return table
