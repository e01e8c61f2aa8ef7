"""The ood_generalization claim's controls: a planted spurious feature that removal fixes, and
broken evaluations (random codes, shuffled labels, random removal) that never give `holds`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from saeprobe.claims import HOLDS, MEASURED, NEGATIVE, POSITIVE, evidence_rows, judge
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
    removal_control,
    spurious_controls,
    training_views,
)

PROBE = ProbeSettings([1e-3], 0.0, 0, torch.device("cpu"))


def _planted(n: int, agreement: float, rng: np.random.Generator) -> tuple:
    """Codes with 4 noisy core dims carrying the class (3 classes), 4 clean spurious dims
    carrying a colour that agrees with the class with probability `agreement`, and 8 noise
    dims. Returns (codes (n, 16), raw (n, 16) = codes, y (n,), spurious (16,) bool)."""
    fixed = np.random.default_rng(99)  # the same class and colour directions in every split
    core_dirs, spur_dirs = fixed.standard_normal((3, 4)), 3 * fixed.standard_normal((3, 4))
    y = rng.integers(0, 3, n)
    colour = np.where(rng.random(n) < agreement, y, rng.integers(0, 3, n))
    core = np.eye(3)[y] @ core_dirs + 1.2 * rng.standard_normal((n, 4))
    spur = np.eye(3)[colour] @ spur_dirs + 0.1 * rng.standard_normal((n, 4))
    codes = np.concatenate([core, spur, rng.standard_normal((n, 8))], axis=1)
    return codes, y, colour, np.r_[np.zeros(4), np.ones(4), np.zeros(8)].astype(bool)


def test_removing_the_planted_spurious_dims_helps_and_random_dims_do_not() -> None:
    rng = np.random.default_rng(0)
    x, y, _, spurious = _planted(3000, 0.97, rng)
    xt, yt, colour_t, _ = _planted(2000, 0.0, rng)  # colour independent of the class
    conflict = colour_t != yt
    # the "raw" features here: the same codes (the test is about removal, not the basis)
    res = removal_control(x, x, y, xt[conflict], xt[conflict], yt[conflict], spurious, 3, PROBE)
    pos = paired_difference(res.minus_spurious, res.raw, 0)
    neg = paired_difference(res.minus_random, res.raw, 0)
    assert res.accuracy["raw"] < 0.6 < res.accuracy["minus_spurious"]
    assert pos.ci_low > 0.0
    assert not neg.ci_low > 0.0


def test_views_keep_the_agreement_and_the_size() -> None:
    rng = np.random.default_rng(1)
    images = pd.DataFrame(
        {
            "superclass": rng.choice(["a", "b", "c"], 3000),
            "colour": rng.choice(list("rgbcmyk"), 3000),
        }
    )
    s = SpuriousSettings()
    owner = assign_values(["a", "b", "c"], images["colour"].unique(), 0)
    assert sorted(set(owner.values())) == ["a", "b", "c"]
    agree = agreeing(images, s, owner)
    view, balanced = training_views(agree, 500, 0.95, 0)
    assert len(view) == len(balanced) == 500
    assert abs(agree[view].mean() - 0.95) < 0.01
    assert agree[balanced].mean() < 0.6


def test_latents_are_named_by_their_purest_level() -> None:
    rng = np.random.default_rng(2)
    colour = rng.integers(0, 8, 400)
    shape = rng.integers(0, 9, 400)
    codes = np.zeros((400, 3))
    codes[:, 0] = (colour == 3) * rng.random(400)
    codes[:, 1] = (shape == 5) * rng.random(400)
    levels = {"label": shape.astype(str), "colour": colour.astype(str)}
    assert named_latents(codes, levels, top_n=16, min_active=8).tolist() == ["colour", "label", ""]


def _evidence(measured, positive, negative) -> pd.DataFrame:
    rows = []
    for case, est in ((MEASURED, measured), (POSITIVE, positive), (NEGATIVE, negative)):
        rows += evidence_rows(CLAIM, "m/site", case, {STATISTIC: est})
    return pd.DataFrame(rows)


def test_random_codes_or_shuffled_labels_never_hold() -> None:
    rng = np.random.default_rng(3)
    x, y, _, spurious = _planted(3000, 0.97, rng)
    xt, yt, colour_t, _ = _planted(2000, 0.0, rng)
    conflict = colour_t != yt
    good = removal_control(x, x, y, xt[conflict], xt[conflict], yt[conflict], spurious, 3, PROBE)
    positive = paired_difference(good.minus_spurious, good.raw, 0)
    negative = paired_difference(good.minus_random, good.raw, 0)
    # the intact planted case: removal passes, random removal fails; measured = the positive
    intact = judge(_evidence(positive, positive, negative)).iloc[0]
    assert (intact.positive_pass, intact.negative_pass, intact.verdict) == (True, False, HOLDS)
    # the measured case as the task runs it: natural training images, every test image
    xn, yn, _, _ = _planted(3000, 0.0, rng)
    # random codes: the "SAE" probe sees noise
    noise, codes = rng.standard_normal(xt.shape), rng.standard_normal(xn.shape)
    broken = removal_control(xn, codes, yn, xt, noise, yt, spurious, 1, PROBE)
    measured = paired_difference(broken.all_codes, broken.raw, 0)
    assert judge(_evidence(measured, positive, negative)).iloc[0].verdict != HOLDS
    # shuffled training labels for the "SAE" probe
    shuffled = removal_control(xn, xn, rng.permutation(yn), xt, xt, yt, spurious, 1, PROBE)
    measured = paired_difference(shuffled.all_codes, broken.raw, 0)
    assert judge(_evidence(measured, positive, negative)).iloc[0].verdict != HOLDS


def test_a_broken_positive_is_inconclusive() -> None:
    rng = np.random.default_rng(4)
    x, y, _, spurious = _planted(3000, 0.97, rng)
    xt, yt, colour_t, _ = _planted(2000, 0.0, rng)
    conflict = colour_t != yt
    wrong = np.zeros_like(spurious)
    wrong[rng.choice(np.flatnonzero(~spurious), spurious.sum(), replace=False)] = True
    res = removal_control(x, x, y, xt[conflict], xt[conflict], yt[conflict], wrong, 3, PROBE)
    positive = paired_difference(res.minus_spurious, res.raw, 0)  # random, not colour, removed
    negative = paired_difference(res.minus_random, res.raw, 0)
    measured = paired_difference(np.ones(50), np.zeros(50), 0)  # a measured case that passes
    assert measured.ci_low > 0
    verdict = judge(_evidence(measured, positive, negative)).iloc[0].verdict
    assert verdict == "inconclusive (control failed)"


def test_images_without_the_attribute_leave_the_controls_out() -> None:
    images = pd.DataFrame({"index": np.arange(30), "label": ["n01"] * 30})
    data = SiteData(np.zeros((30, 4), np.float32), np.arange(30), images)
    table, evidence = spurious_controls(data, data, None, SpuriousSettings(), PROBE, ["colour"])
    assert table == []
    verdict = judge(pd.concat([_evidence(paired_difference(np.ones(9), np.zeros(9), 0),
                                         NAN, NAN).iloc[:1], pd.DataFrame(evidence)
                               .assign(site="m/site")]))  # fmt: skip
    assert verdict.iloc[0].verdict == "inconclusive (control failed)"
    assert "no colour, superclass column" in evidence[0]["note"]
