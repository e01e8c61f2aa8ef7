"""The verdict machinery: tests, controls, intervals, claims.csv and RESULTS.md."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saeprobe.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NEGATIVE,
    NOT_RUN,
    POSITIVE,
    Test,
    evidence_rows,
    judge,
    overall_verdict,
    site_verdict,
    write_evidence,
)
from saeprobe.stats import Estimate, auroc, bootstrap, null_estimate, permutation_p
from saeprobe.summary import read_evidence, write_results


def _rows(measured: float, positive: float, negative: float, site: str = "m/L0") -> list[dict]:
    """Semantics evidence whose primary statistic is a difference with a +-0.01 interval."""
    out = []
    for case, v in (("measured", measured), (POSITIVE, positive), (NEGATIVE, negative)):
        e = Estimate(v, v - 0.01, v + 0.01)
        out += evidence_rows("semantics", site, case, {"purity_minus_random": e})
    return out


@pytest.mark.parametrize(
    ("measured", "positive", "negative", "verdict"),
    [
        (0.2, 0.3, -0.1, HOLDS),
        (-0.2, 0.3, -0.1, FAILS),
        (0.2, -0.3, -0.1, INCONCLUSIVE),  # the positive control failed
        (0.2, 0.3, 0.1, INCONCLUSIVE),  # the negative control passed
        (0.005, 0.3, -0.1, FAILS),  # point estimate above 0, interval not
    ],
)
def test_site_verdict_needs_both_controls(measured, positive, negative, verdict):
    claims = judge(pd.DataFrame(_rows(measured, positive, negative)))
    assert claims["verdict"].tolist() == [verdict]


def test_nan_statistic_is_not_run_not_a_pass():
    rows = evidence_rows("reconstruction", "m/L0", "measured", {"nmse": Estimate(float("nan"))})
    rows += evidence_rows("reconstruction", "m/L0", POSITIVE, {"nmse": Estimate(0.01)})
    rows += evidence_rows("reconstruction", "m/L0", NEGATIVE, {"nmse": Estimate(0.5)})
    assert judge(pd.DataFrame(rows))["verdict"].tolist() == [NOT_RUN]
    # a NaN statistic beside a finite one is skipped, not counted as a pass or a failure
    rows = evidence_rows(
        "reconstruction",
        "m/L0",
        "measured",
        {"nmse": Estimate(0.05, 0.04, 0.06), "downstream_recovered": Estimate(float("nan"))},
    )
    rows += evidence_rows("reconstruction", "m/L0", POSITIVE, {"nmse": Estimate(0.01)})
    rows += evidence_rows("reconstruction", "m/L0", NEGATIVE, {"nmse": Estimate(0.5)})
    assert judge(pd.DataFrame(rows))["verdict"].tolist() == [HOLDS]


def test_missing_control_is_inconclusive():
    rows = evidence_rows("semantics", "s", "measured", {"purity_minus_random": Estimate(0.3)})
    assert judge(pd.DataFrame(rows))["verdict"].tolist() == [INCONCLUSIVE]


def test_sensitivity_rows_are_never_judged():
    rows = _rows(-0.2, 0.3, -0.1)
    rows += evidence_rows(
        "semantics", "m/L0", "sensitivity:other", {"purity_minus_random": Estimate(0.9)}
    )
    assert judge(pd.DataFrame(rows))["verdict"].tolist() == [FAILS]


def test_test_bounds_use_the_interval_and_p():
    assert not Test(above=0).passes(Estimate(0.1, -0.01, 0.2))
    assert Test(above=0).passes(Estimate(0.1, 0.01, 0.2))
    assert not Test(below=0.2).passes(Estimate(0.1, 0.05, 0.21))
    assert Test(below=0.2, on_value=True).passes(Estimate(0.1, 0.05, 0.21))
    assert not Test(p_below=0.05).passes(Estimate(0.3, p=0.05))  # a tie is not significant
    assert not Test(p_below=0.05).passes(Estimate(0.3))
    assert not Test(above=0).passes(Estimate(float("nan")))


def test_overall_verdict_is_a_majority_with_inconclusive_sites_deciding():
    assert overall_verdict([HOLDS, HOLDS, FAILS]) == HOLDS
    assert overall_verdict([HOLDS, FAILS, FAILS]) == FAILS
    assert overall_verdict([HOLDS, INCONCLUSIVE, FAILS]) == INCONCLUSIVE
    assert overall_verdict([NOT_RUN]) == NOT_RUN
    assert site_verdict(None, True, False) == NOT_RUN


def test_unknown_claim_is_refused():
    with pytest.raises(KeyError, match="unknown claim"):
        evidence_rows("telepathy", "s", "measured", {"x": Estimate(1.0)})


def test_paired_bootstrap_sees_a_small_consistent_difference():
    rng = np.random.default_rng(0)
    base = rng.normal(size=500)
    a, b = base + 0.05, base + rng.normal(scale=0.01, size=500)
    paired = bootstrap(lambda x, y: float(np.mean(x - y)), [a, b], seed=0)
    assert paired.ci_low > 0  # pairing removes the shared variance
    unpaired_width = 2 * 1.96 * np.std(base) * np.sqrt(2 / 500)
    assert paired.ci_high - paired.ci_low < unpaired_width / 5


def test_bootstrap_of_an_auroc_keeps_strata():
    rng = np.random.default_rng(1)
    is_ood = np.r_[np.zeros(300, bool), np.ones(100, bool)]
    same = rng.normal(size=400)
    e = bootstrap(
        lambda y, s: auroc(s[~y], s[y]), [is_ood, same], seed=0, strata=is_ood.astype(int)
    )
    assert e.ci_low < 0.5 < e.ci_high
    far = same + 3 * is_ood
    e = bootstrap(lambda y, s: auroc(s[~y], s[y]), [is_ood, far], seed=0, strata=is_ood)
    assert e.ci_low > 0.9


def test_auroc_matches_the_rank_definition_with_ties():
    assert auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 5, 50).astype(float), rng.integers(0, 5, 40).astype(float)
    ref = roc_auc_score(np.r_[np.zeros(50), np.ones(40)], np.r_[x, y])
    assert auroc(x, y) == pytest.approx(ref)


def test_permutation_p_counts_ties_as_extreme():
    null = np.array([0.1, 0.2, 0.3, 0.3])
    assert permutation_p(0.3, null) == pytest.approx(3 / 5)
    assert null_estimate(0.5, null).p == pytest.approx(1 / 5)


def test_results_md_and_claims_csv(tmp_path):
    write_evidence(
        tmp_path / "a.csv", _rows(0.2, 0.3, -0.1, "m/L1") + _rows(-0.2, 0.3, 0.2, "m/L2")
    )
    write_evidence(tmp_path / "empty.csv", [])
    claims = write_results(
        [tmp_path / "a.csv", tmp_path / "empty.csv", tmp_path / "missing.csv"],
        "a test",
        tmp_path / "RESULTS.md",
        tmp_path / "claims.csv",
        tmp_path / "evidence.csv",
        tmp_path / "claims.png",
    )
    table = pd.read_csv(tmp_path / "claims.csv")
    assert table.set_index("site")["verdict"].to_dict() == {"m/L1": HOLDS, "m/L2": INCONCLUSIVE}
    assert {
        "claim",
        "site",
        "measured",
        "positive",
        "negative",
        "statistic",
        "ci_low",
        "ci_high",
        "p",
        "verdict",
    } <= set(table.columns)
    assert len(read_evidence([tmp_path / "evidence.csv"])) == 6
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"| {CLAIMS['semantics'].title} | **{INCONCLUSIVE}** | 1 / 2 |" in text
    assert f"| {CLAIMS['ontology'].title} | **{NOT_RUN}** | 0 / 0 |" in text
    assert "positive control" in text and "negative control" in text
    assert len(claims) == 2
    assert (tmp_path / "claims.png").stat().st_size > 1000
    assert (tmp_path / "claims.pdf").stat().st_size > 1000


def test_every_negative_control_must_fail_and_every_positive_pass():
    def extra(case: str, v: float) -> list[dict]:
        e = Estimate(v, v - 0.01, v + 0.01)
        return evidence_rows("semantics", "m/L0", case, {"purity_minus_random": e})

    both_fail = _rows(0.2, 0.3, -0.1) + extra(NEGATIVE + ":untrained", -0.05)
    assert judge(pd.DataFrame(both_fail))["verdict"].tolist() == [HOLDS]
    one_passes = _rows(0.2, 0.3, -0.1) + extra(NEGATIVE + ":untrained", 0.2)
    table = judge(pd.DataFrame(one_passes)).iloc[0]
    assert table["negative_pass"] and table["verdict"] == INCONCLUSIVE
    assert table["negative"] == pytest.approx(-0.1)  # the plain negative's value is reported
    a_positive_fails = _rows(0.2, 0.3, -0.1) + extra(POSITIVE + ":other", -0.2)
    assert judge(pd.DataFrame(a_positive_fails))["verdict"].tolist() == [INCONCLUSIVE]


def test_sites_of_different_models_are_judged_apart(tmp_path):
    """Two models with a site of the same name ("L0_all") must not be pooled into one."""
    a = write_evidence(tmp_path / "a.csv", _rows(0.2, 0.3, -0.1, "L0_all"), model="m1")
    b = write_evidence(tmp_path / "b.csv", _rows(-0.2, 0.3, -0.1, "L0_all"), model="m2")
    claims = judge(pd.concat([a, b], ignore_index=True)).set_index("site")["verdict"]
    assert claims.to_dict() == {"m1/L0_all": HOLDS, "m2/L0_all": FAILS}
    kept = write_evidence(tmp_path / "c.csv", _rows(0.2, 0.3, -0.1, "m3/L0"), model="m1")
    assert set(kept["site"]) == {"m3/L0"}


def test_claims_figure_shows_every_control_and_no_sensitivity_row():
    from saeprobe.plots.claims import claims_figure

    def extra(case: str, v: float) -> list[dict]:
        e = Estimate(v, v - 0.01, v + 0.01)
        return evidence_rows("semantics", "m/L0", case, {"purity_minus_random": e})

    rows = _rows(0.2, 0.3, -0.1) + extra(NEGATIVE + ":untrained", -0.05)
    rows += extra("sensitivity:other_sae", 0.7)
    evidence = pd.DataFrame(rows)
    fig = claims_figure(evidence, judge(evidence))
    ax = fig.axes[0]
    points = sorted(
        float(line.get_xdata()[0]) for line in ax.lines if line.get_marker() not in ("None", "")
    )
    assert points == pytest.approx([-0.1, -0.05, 0.2, 0.3])
    assert [t.get_text() for t in ax.texts] == ["untrained"]
