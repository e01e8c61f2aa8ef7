"""The ood_generalization claim's controls: planted colour units that the naming finds and whose
removal fixes a probe that leans on them, and broken evaluations (random codes, shuffled
labels, naming that finds nothing) that never give `holds`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from saeprobe.claims import HOLDS, INCONCLUSIVE, MEASURED, NEGATIVE, POSITIVE, evidence_rows, judge
from saeprobe.eval.features import SiteData
from saeprobe.eval.ood_generalization import (
    CLAIM,
    NAN,
    STATISTIC,
    ProbeSettings,
    SpuriousSettings,
    agreeing,
    assign_values,
    named_latents,
    paired_difference,
    planted_units,
    removal_control,
    spurious_controls,
    training_view,
)

PROBE = ProbeSettings([1e-3], 0.0, 0, torch.device("cpu"))
COLOURS = list("rgbcmyko")
SHAPES = {"round": ["circle", "ring"], "polygon": ["square", "hexagon"], "symbol": ["star"]}


def _images(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """An image table (label, superclass, colour, background) and its raw activations (n, 12):
    a noisy superclass direction, a clean colour direction and noise."""
    fixed = np.random.default_rng(99)  # the same directions in every split
    sup_dirs, col_dirs = fixed.standard_normal((3, 12)), fixed.standard_normal((8, 12))
    superclass = rng.integers(0, 3, n)
    colour = rng.integers(0, 8, n)
    names = sorted(SHAPES)
    labels = [SHAPES[names[s]][i % len(SHAPES[names[s]])] for i, s in enumerate(superclass)]
    images = pd.DataFrame(
        {
            "index": np.arange(n),
            "label": labels,
            "superclass": [names[s] for s in superclass],
            "colour": [COLOURS[c] for c in colour],
            "background": rng.choice(["plain", "dots"], n),
        }
    )
    raw = sup_dirs[superclass] + col_dirs[colour] + 0.8 * rng.standard_normal((n, 12))
    return images, raw.astype(np.float32)


class _ReluSAE:
    """A stand-in SAE: codes = relu(x @ W_enc), W_enc (d, width)."""

    def __init__(self, w: np.ndarray) -> None:
        self.W_enc = torch.from_numpy(w.astype(np.float32))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc)


def _site(n: int, seed: int) -> SiteData:
    images, raw = _images(n, np.random.default_rng(seed))
    return SiteData(raw, np.arange(n), images)


def _evidence(measured, positive, negative) -> pd.DataFrame:
    rows = []
    for case, est in ((MEASURED, measured), (POSITIVE, positive), (NEGATIVE, negative)):
        rows += evidence_rows(CLAIM, "m/site", case, {STATISTIC: est})
    return pd.DataFrame(rows)


def _controls(settings: SpuriousSettings, sae_seed: int = 5) -> tuple[list, pd.DataFrame]:
    train, test = _site(2400, 0), _site(900, 1)
    sae = _ReluSAE(np.random.default_rng(sae_seed).standard_normal((12, 32)))
    table, evidence = spurious_controls(train, test, sae, settings, PROBE, ["colour", "background"])
    return table, pd.DataFrame(evidence).assign(site="m/site")


def test_the_planted_positive_passes_and_the_random_negative_fails() -> None:
    table, evidence = _controls(SpuriousSettings())
    passing = evidence_rows(CLAIM, "m/site", MEASURED, {STATISTIC: paired_difference(
        np.ones(50), np.zeros(50), 0)})  # fmt: skip
    verdict = judge(pd.concat([pd.DataFrame(passing), evidence])).iloc[0]
    assert (verdict.positive_pass, verdict.negative_pass, verdict.verdict) == (True, False, HOLDS)
    positive = evidence[(evidence.case == POSITIVE) & (evidence.statistic == STATISTIC)].iloc[0]
    assert "(8 of the planted" in positive.note  # the naming found every planted unit
    accuracy = pd.DataFrame(table).set_index("features")["accuracy"]
    assert accuracy["raw+planted"] < accuracy["raw+planted -colour"]
    # the SAE's own removal is reported on measured rows, never as the judged statistic
    reported = evidence[evidence.case == MEASURED]["statistic"]
    assert set(reported) == {"sae_minus_colour_vs_raw", "sae_removal_gain"}


def test_naming_that_finds_nothing_is_inconclusive() -> None:
    # fewer top images than the naming needs active: no unit is named, nothing is removed
    _, evidence = _controls(SpuriousSettings(top_n=4, min_active=8))
    positive = evidence[(evidence.case == POSITIVE) & (evidence.statistic == STATISTIC)]
    assert np.isnan(positive["value"]).all()
    passing = evidence_rows(CLAIM, "m/site", MEASURED, {STATISTIC: paired_difference(
        np.ones(50), np.zeros(50), 0)})  # fmt: skip
    verdict = judge(pd.concat([pd.DataFrame(passing), evidence])).iloc[0].verdict
    assert verdict == INCONCLUSIVE


def _planted(n: int, agreement: float, rng: np.random.Generator) -> tuple:
    """Features: 4 noisy dims carrying the class (3 classes), 4 clean dims carrying a colour
    that agrees with the class with probability `agreement`, 8 noise dims.
    Returns (x (n, 16), y (n,), colour (n,), spurious (16,) bool)."""
    fixed = np.random.default_rng(99)
    core_dirs, spur_dirs = fixed.standard_normal((3, 4)), 3 * fixed.standard_normal((3, 4))
    y = rng.integers(0, 3, n)
    colour = np.where(rng.random(n) < agreement, y, rng.integers(0, 3, n))
    core = np.eye(3)[y] @ core_dirs + 1.2 * rng.standard_normal((n, 4))
    spur = np.eye(3)[colour] @ spur_dirs + 0.1 * rng.standard_normal((n, 4))
    x = np.concatenate([core, spur, rng.standard_normal((n, 8))], axis=1)
    return x, y, colour, np.r_[np.zeros(4), np.ones(4), np.zeros(8)].astype(bool)


def test_removing_the_spurious_dims_helps_and_random_dims_do_not() -> None:
    rng = np.random.default_rng(0)
    x, y, _, spurious = _planted(3000, 0.97, rng)
    xt, yt, colour_t, _ = _planted(2000, 0.0, rng)
    c = colour_t != yt
    res = removal_control(x, y, xt[c], yt[c], spurious, 3, PROBE, 3)
    assert res.reference.mean() < 0.6 < res.minus_named.mean()
    assert paired_difference(res.minus_named, res.reference, 0).ci_low > 0.0
    assert not paired_difference(res.minus_random, res.reference, 0).ci_low > 0.0


def test_the_view_keeps_the_agreement_and_the_size() -> None:
    rng = np.random.default_rng(1)
    images = pd.DataFrame(
        {"superclass": rng.choice(["a", "b", "c"], 3000), "colour": rng.choice(COLOURS, 3000)}
    )
    owner = assign_values(["a", "b", "c"], images["colour"].unique(), 0)
    assert sorted(set(owner.values())) == ["a", "b", "c"]
    agree = agreeing(images, SpuriousSettings(), owner)
    for agreement in (0.95, 1.0):
        view = training_view(agree, 500, agreement, 0)
        assert len(view) == 500
        assert abs(agree[view].mean() - agreement) < 0.01


def test_planted_units_are_named_after_the_attribute() -> None:
    rng = np.random.default_rng(2)
    colour = rng.choice(COLOURS, 400)
    shape = rng.integers(0, 9, 400)
    units = planted_units(colour, COLOURS, 2.0)
    assert units.shape == (400, 8) and set(np.unique(units)) == {0.0, 2.0}
    shape_unit = ((shape == 5) * rng.random(400))[:, None]
    codes = np.concatenate([units, shape_unit, np.zeros((400, 1))], axis=1)
    levels = {"label": shape.astype(str), "colour": colour}
    names = named_latents(codes, levels, top_n=16, min_active=8).tolist()
    assert names == ["colour"] * 8 + ["label", ""]


def test_random_codes_or_shuffled_labels_never_hold() -> None:
    rng = np.random.default_rng(3)
    x, y, _, spurious = _planted(3000, 0.97, rng)
    xt, yt, colour_t, _ = _planted(2000, 0.0, rng)
    c = colour_t != yt
    good = removal_control(x, y, xt[c], yt[c], spurious, 3, PROBE, 3)
    positive = paired_difference(good.minus_named, good.reference, 0)
    negative = paired_difference(good.minus_random, good.reference, 0)
    intact = judge(_evidence(positive, positive, negative)).iloc[0]
    assert (intact.positive_pass, intact.negative_pass, intact.verdict) == (True, False, HOLDS)
    # the measured case as the task runs it: natural training images, every test image
    xn, yn, _, _ = _planted(3000, 0.0, rng)
    none = np.zeros(x.shape[1], bool)
    raw = removal_control(xn, yn, xt, yt, none, 0, PROBE, 3).reference
    noise = removal_control(
        rng.standard_normal(xn.shape), yn, rng.standard_normal(xt.shape), yt, none, 0, PROBE, 3
    ).reference  # random codes
    shuffled = removal_control(xn, rng.permutation(yn), xt, yt, none, 0, PROBE, 3).reference
    for broken in (noise, shuffled):
        measured = paired_difference(broken, raw, 0)
        assert judge(_evidence(measured, positive, negative)).iloc[0].verdict != HOLDS


def test_images_without_the_attribute_leave_the_controls_out() -> None:
    images = pd.DataFrame({"index": np.arange(30), "label": ["n01"] * 30})
    data = SiteData(np.zeros((30, 4), np.float32), np.arange(30), images)
    table, evidence = spurious_controls(data, data, None, SpuriousSettings(), PROBE, ["colour"])
    assert table == []
    measured = _evidence(paired_difference(np.ones(9), np.zeros(9), 0), NAN, NAN).iloc[:1]
    verdict = judge(pd.concat([measured, pd.DataFrame(evidence).assign(site="m/site")]))
    assert verdict.iloc[0].verdict == INCONCLUSIVE
    assert "no colour, superclass column" in evidence[0]["note"]
