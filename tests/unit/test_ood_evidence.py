"""Claim `ood_detection`: the evidence with its controls can say yes, no and 'inconclusive'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saeprobe.claims import FAILS, HOLDS, INCONCLUSIVE, judge
from saeprobe.eval.features import RAW
from saeprobe.eval.ood_detection import (
    bootstrap_aurocs,
    group_means,
    knn_bank_rows,
    ood_evidence,
    oracle_scores,
    site_evidence,
)
from saeprobe.stats import auroc_from_labels

ID, NEAR, FAR, FRESH = "id", "near", "far", "fresh"
SHIFTS = {ID: 0.0, NEAR: 1.0, FAR: 3.0, FRESH: 0.0}


def _scores(rng: np.random.Generator, sae_shift: dict[str, float] | None = None) -> dict:
    """kNN-like scores of 600 ID and 300 images per other set, shifted by SHIFTS; the SAE's
    scores are the raw ones plus a little noise (same images), with `sae_shift` overriding
    the shift of a set."""
    sizes = {ID: 600, NEAR: 300, FAR: 300, FRESH: 300}
    sae = {**SHIFTS, **(sae_shift or {})}
    raw = {d: rng.normal(0.0, 1.0, n) for d, n in sizes.items()}

    def codes() -> dict[str, np.ndarray]:
        return {d: x + sae[d] + 0.2 * rng.normal(size=len(x)) for d, x in raw.items()}

    return {
        (RAW, "knn"): {d: x + SHIFTS[d] for d, x in raw.items()},
        ("sae", "knn"): codes(),
        ("other", "knn"): codes(),
    }


def _verdict(scores: dict, far: str | None = FAR, fresh: str | None = FRESH) -> pd.Series:
    oracles = {NEAR: 0.8, FAR: 0.99, FRESH: 0.5}
    rows = ood_evidence(
        scores, oracles, "L0", ID, NEAR, far, fresh, "sae", "knn", ["other"], seed=0, n_boot=300
    )
    return judge(pd.DataFrame(rows)).iloc[0]


def test_intact_detector_holds_with_its_controls() -> None:
    v = _verdict(_scores(np.random.default_rng(0)))
    assert v.measured_pass and v.positive_pass and not v.negative_pass
    assert v.verdict == HOLDS and v.ci_low > 0.5


def test_random_sae_codes_do_not_hold() -> None:
    """SAE scores unrelated to the images (random codes): the measured case fails."""
    rng = np.random.default_rng(1)
    scores = _scores(rng)
    scores[("sae", "knn")] = {d: rng.normal(0, 1, len(s)) for d, s in scores[RAW, "knn"].items()}
    v = _verdict(scores)
    assert not v.measured_pass and v.verdict != HOLDS
    # random only on the near set (the controls intact): a clean "does not hold"
    v = _verdict(_scores(np.random.default_rng(2), sae_shift={NEAR: 0.0}))
    assert v.verdict == FAILS


def test_sae_worse_than_raw_does_not_hold() -> None:
    """The SAE separates the near set above chance but far worse than raw: not like for like."""
    v = _verdict(_scores(np.random.default_rng(3), sae_shift={NEAR: 0.4}))
    assert v.measured > 0.5 and v.verdict == FAILS


def test_broken_negative_control_is_inconclusive() -> None:
    """An OOD set passed as the 'fresh ID' sample: the negative control passes."""
    v = _verdict(_scores(np.random.default_rng(4)), fresh=FAR)
    assert v.negative_pass and v.verdict == INCONCLUSIVE


def test_missing_controls_are_inconclusive() -> None:
    """The paper config without far / fresh sets: never 'holds'."""
    v = _verdict(_scores(np.random.default_rng(5)), far=None, fresh=None)
    assert v.verdict == INCONCLUSIVE


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_aurocs_match_the_plain_auroc(ties: bool) -> None:
    rng = np.random.default_rng(6)
    is_ood = np.r_[np.zeros(200, bool), np.ones(100, bool)]
    a = rng.normal(size=300) + is_ood
    if ties:
        a = np.round(a)
    b = rng.normal(size=300)
    value, draws = bootstrap_aurocs([a, b], is_ood, seed=0, n_boot=400)
    assert value == pytest.approx([auroc_from_labels(is_ood, a), auroc_from_labels(is_ood, b)])
    lo, hi = np.quantile(draws[:, 0], [0.025, 0.975])
    assert lo < value[0] < hi and hi - lo < 0.2
    assert np.quantile(draws[:, 1], 0.025) < 0.5 < np.quantile(draws[:, 1], 0.975)


def test_oracle_separates_a_shifted_set_and_not_a_fresh_sample() -> None:
    rng = np.random.default_rng(7)
    x_id = rng.normal(size=(400, 8))
    shifted = rng.normal(size=(200, 8)) + np.r_[1.0, np.zeros(7)]
    fresh = rng.normal(size=(200, 8))
    is_ood = np.r_[np.zeros(400, bool), np.ones(200, bool)]
    assert auroc_from_labels(is_ood, np.concatenate(oracle_scores(x_id, shifted, 0))) > 0.7
    assert abs(auroc_from_labels(is_ood, np.concatenate(oracle_scores(x_id, fresh, 0))) - 0.5) < 0.1


def test_ood_groups_are_averaged_apart_and_the_knn_bank_is_a_seeded_subset() -> None:
    rows = [
        {"model": "m", "site": "s", "layer": 1, "id_dataset": "id", "features": "raw",
         "score": "knn", "ood_dataset": d, "auroc": a, "fpr95": f, "n_id": 10, "n_ood": 5}
        for d, a, f in (("ssb", 0.6, 0.8), ("ninco", 0.8, 0.6), ("inat", 0.99, 0.05),
                        ("sun", 0.9, 0.3), ("other", 0.1, 1.0))
    ]  # fmt: skip
    groups = {"ssb": "near", "ninco": "near", "inat": "far", "sun": "legacy"}
    means = pd.DataFrame(group_means(rows, groups)).set_index("ood_dataset")
    assert set(means.index) == {"near (mean)", "far (mean)", "legacy (mean)"}
    assert means.loc["near (mean)", "auroc"] == pytest.approx(0.7)
    assert means.loc["near (mean)", "fpr95"] == pytest.approx(0.7)
    assert means.loc["near (mean)", "n_sets"] == 2 and means.loc["near (mean)", "n_ood"] == 10
    assert means.loc["far (mean)", "auroc"] == pytest.approx(0.99)  # never mixed with near
    assert group_means(rows, {}) == []
    bank = knn_bank_rows(1000, 100, seed=0)
    assert len(bank) == 100 and len(set(bank)) == 100 and (np.diff(bank) > 0).all()
    np.testing.assert_array_equal(bank, knn_bank_rows(1000, 100, seed=0))
    assert not np.array_equal(bank, knn_bank_rows(1000, 100, seed=1))
    np.testing.assert_array_equal(knn_bank_rows(50, None, seed=0), np.arange(50))
    np.testing.assert_array_equal(knn_bank_rows(50, 80, seed=0), np.arange(50))


def _factor_world(n: int, seed: int, colours: list[str]) -> tuple[np.ndarray, dict]:
    """Codes (n, 12) of images with a shape of 3 and a colour from `colours`: latents 0-2 fire
    for the shapes, 3-5 for colours red, green, blue (other colours light none), 6-11 noise."""
    rng = np.random.default_rng(seed)
    shapes = rng.choice(["circle", "square", "star"], n)
    colour = rng.choice(colours, n)
    codes = rng.exponential(0.05, (n, 12)).astype(np.float32)
    for j, value in enumerate(["circle", "square", "star"]):
        codes[shapes == value, j] += rng.uniform(0.5, 1.5, (shapes == value).sum())
    for j, value in enumerate(["red", "green", "blue"]):
        codes[colour == value, 3 + j] += rng.uniform(0.5, 1.5, (colour == value).sum())
    return codes, {"shape": shapes, "colour": colour}


def test_factor_silence_flags_an_unseen_colour_and_not_a_fresh_sample() -> None:
    from saeprobe.eval.ood_detection import FactorSilenceScore

    known = ["red", "green", "blue"]
    train, factors = _factor_world(600, 0, known)
    score = FactorSilenceScore(train, factors)
    assert score.latents == {"shape": 3, "colour": 3}
    fresh, _ = _factor_world(300, 1, known)
    unseen, _ = _factor_world(300, 2, ["white", "black"])
    id_scores = score(fresh)
    is_ood = np.r_[np.zeros(300, bool), np.ones(300, bool)]
    assert auroc_from_labels(is_ood, np.r_[id_scores, score(unseen)]) > 0.95
    fresh2, _ = _factor_world(300, 3, known)
    assert abs(auroc_from_labels(is_ood, np.r_[id_scores, score(fresh2)]) - 0.5) < 0.1


def test_factor_silence_cannot_tell_on_codes_blind_to_the_factors() -> None:
    """Codes that ignore the factors: no latent is selective, so the score is missing (NaN),
    never a detector."""
    from saeprobe.eval.ood_detection import FactorSilenceScore

    _, factors = _factor_world(600, 0, ["red", "green", "blue"])
    blind = np.random.default_rng(4).exponential(1.0, (600, 12)).astype(np.float32)
    score = FactorSilenceScore(blind, factors)
    assert min(score.latents.values()) == 0
    assert np.isnan(score(blind)).all()


def test_site_evidence_runs_every_site_with_the_other_saes_as_sensitivity() -> None:
    rng = np.random.default_rng(0)
    scores = {"L0": _scores(rng), "L1": _scores(rng)}
    oracles = {site: {NEAR: 0.8, FAR: 0.99, FRESH: 0.5} for site in scores}
    rows = pd.DataFrame(
        site_evidence(scores, oracles, ID, NEAR, FAR, FRESH, "sae", "knn", ["sae", "other"], 0)
    )
    assert sorted(rows["site"].unique()) == ["L0", "L1"]
    cases = set(rows["case"])
    assert {"measured", "positive", "negative"} <= cases
    assert any(c.endswith("other") for c in cases) and not any(c.endswith("sae") for c in cases)
