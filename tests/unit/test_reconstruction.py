"""The reconstruction claim's evidence: cases, controls and verdicts on small synthetic sites,
with the real trainer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import saeprobe.eval.sae_quality as quality
from saeprobe.claims import CLAIMS, FAILS, HOLDS, INCONCLUSIVE, NOT_RUN, case_passes, judge
from saeprobe.sae import SAEConfig, TrainConfig, build_sae
from saeprobe.sae.synthetic import planted_sparse
from saeprobe.stats import Estimate

D, WIDTH, K, N_TRAIN = 32, 128, 4, 4000
CPU = torch.device("cpu")
SAE_CFG = SAEConfig.from_dict({"arch": "topk", "width": WIDTH, "k": K, "name": "primary"})
TRAIN_CFG = TrainConfig.from_dict(
    {
        "batch_size": 128,
        "epochs": 5,
        "lr": 0.003,
        "warmup_steps": 10,
        "init_sample_size": 1024,
        "dead_after_tokens": 2000,
        "checkpoint_every": 0,
    }
)


@pytest.fixture(scope="module")
def site() -> tuple[np.ndarray, np.ndarray]:
    """A site with sparse structure and a decaying spectrum: (train (4000, 32), eval (1000, 32))."""
    torch.set_num_threads(1)
    x = planted_sparse(N_TRAIN + 1000, D, WIDTH, K, seed=3).x.astype(np.float64)
    x = x @ np.diag(np.geomspace(3.0, 0.5, D))
    return x[:N_TRAIN], x[N_TRAIN:]


@pytest.fixture(scope="module")
def primary(site) -> torch.nn.Module:
    return quality.train_control(site[0], SAE_CFG, TRAIN_CFG, 0, CPU)


def evidence(saes, site, **kw) -> pd.DataFrame:
    rows = quality.reconstruction_evidence(
        saes, "primary", SAE_CFG, TRAIN_CFG, site[0], site[1], N_TRAIN, {}, "s", 0, CPU, **kw
    )
    return pd.DataFrame(rows)


def passes(ev: pd.DataFrame, case: str) -> bool | None:
    return case_passes(CLAIMS["reconstruction"], ev[ev["case"] == case])


@pytest.fixture(scope="module")
def intact(site, primary) -> pd.DataFrame:
    return evidence({"primary": primary}, site)


def test_planted_positive_passes_and_gaussian_negative_fails(intact):
    assert passes(intact, "positive") is True
    assert passes(intact, "negative") is False
    stat = intact.set_index(["case", "statistic"])["value"]
    assert stat["positive", "atoms_recovered"] > 0.9
    # the planted dictionary gives the SAE a far larger edge over PCA than its Gaussian twin
    # does, while a second Gaussian draw gains nothing over the first
    assert stat["positive", "structure_gain"] > 0.2
    assert abs(stat["negative", "structure_gain"]) < 0.05
    # the site is itself a planted dictionary: its SAE gains from the structure (its NMSE on
    # this small, steep-spectrum site may still miss 0.2), and the controls behave
    gain = intact.set_index(["case", "statistic"])["ci_low"]
    assert gain["measured", "structure_gain"] > 0
    assert judge(intact)["verdict"].iloc[0] in (HOLDS, FAILS)


def test_random_decoder_does_not_hold(site, primary):
    broken = build_sae(SAE_CFG, D)
    broken.load_state_dict(primary.state_dict())
    with torch.no_grad():
        w = torch.randn_like(broken.W_dec, generator=torch.Generator().manual_seed(0))
        broken.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
    ev = evidence({"primary": broken}, site)
    assert passes(ev, "measured") is False
    assert judge(ev)["verdict"].iloc[0] == FAILS


def test_useless_trainer_makes_the_positive_fail(site, primary, monkeypatch):
    def untrained(x, sae_cfg, train_cfg, seed, device):
        sae = build_sae(sae_cfg, x.shape[1])
        with torch.no_grad():
            scale = 1.0 / math.sqrt(float((x**2).sum(1).mean()))
            sae.initialize(seed, torch.as_tensor(x.mean(0) * scale, dtype=torch.float32), scale)
            sae.fold_input_scale()
        return sae.eval()

    monkeypatch.setattr(quality, "train_control", untrained)
    ev = evidence({"primary": primary}, site)
    assert passes(ev, "positive") is False
    assert judge(ev)["verdict"].iloc[0] == INCONCLUSIVE


def test_missing_downstream_is_not_a_pass():
    claim = CLAIMS["reconstruction"]
    good = {
        "structure_gain": Estimate(0.1, 0.05, 0.15),
        "nmse": Estimate(0.05, 0.04, 0.06),
        "dead_fraction": Estimate(0.0),
        "dense_fraction": Estimate(0.0),
    }

    def rows(downstream: float, base: dict = good) -> pd.DataFrame:
        est = {**base, "downstream_recovered": Estimate(downstream)}
        return pd.DataFrame(quality.evidence_rows("reconstruction", "s", "measured", est))

    assert case_passes(claim, rows(0.95)) is True
    assert case_passes(claim, rows(0.5)) is False
    # NaN means "not run": judged on the rest, never counted as a pass by itself
    assert case_passes(claim, rows(float("nan"))) is True
    nothing = {k: Estimate(float("nan")) for k in good}
    assert case_passes(claim, rows(float("nan"), nothing)) is None
    assert judge(rows(float("nan"), nothing))["verdict"].iloc[0] == NOT_RUN


def test_downstream_nan_is_noted(site, primary):
    ev = evidence({"primary": primary}, site, controls=False)
    assert set(ev["case"]) == {"measured"}
    row = ev[ev["statistic"] == "downstream_recovered"].iloc[0]
    assert math.isnan(row["value"]) and "not run" in row["note"]


def test_gaussian_site_matches_covariance(site):
    g = quality.gaussian_site(site[0], 20_000, seed=0)
    ref = np.cov(site[0], rowvar=False)
    assert np.abs(np.cov(g, rowvar=False) - ref).max() < 0.1 * np.abs(ref).max()
    x, atoms = quality.planted_site(site[0], 1000, WIDTH, K, seed=0)
    assert x.shape == (1000, D) and atoms.shape == (WIDTH, D)
    total = lambda a: ((a - a.mean(0)) ** 2).sum(1).mean()  # noqa: E731
    assert abs(total(x) / total(site[0]) - 1) < 0.05


def _terms(gain: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """gain_terms-like rows whose gain over PCA is `gain`, with little eval noise."""
    rng = np.random.default_rng(seed)
    dev = np.ones(n)
    err_pca = 0.6 + 0.01 * rng.standard_normal(n)
    return err_pca, err_pca - gain + 0.01 * rng.standard_normal(n), dev, np.zeros(4)


def test_training_noise_widens_the_structure_gain_interval():
    twins = quality.Twins(tuple(_terms(g, seed=i) for i, g in enumerate((0.0, 0.02, 0.04))))
    sd = float(np.std(twins.gains, ddof=1))
    assert sd == pytest.approx(0.02, rel=0.1)
    expected = 4.302653 * sd * math.sqrt(1 + 1 / 3)  # t(0.975, 2) * sd * sqrt(1 + 1/3)
    assert twins.noise_halfwidth() == pytest.approx(expected, rel=1e-4)
    # another draw of the same Gaussian differs by training noise: eval rows alone call it a
    # significant gain, the twins' spread does not
    other_draw = _terms(0.05, seed=7)
    eval_only = quality.structure_gain(other_draw, twins, 0, noise=0.0)
    assert eval_only.ci_low > 0
    negative = quality.reconstruction_estimates(other_draw, twins, 0)["structure_gain"]
    assert negative.ci_low < 0 < negative.ci_high
    assert negative.value == pytest.approx(0.03, abs=1e-3)
    # structure far beyond the noise still shows
    real = quality.reconstruction_estimates(_terms(0.4, seed=8), twins, 0)["structure_gain"]
    assert real.ci_low > 0.2
    assert quality.Twins((twins.terms[0],)).noise_halfwidth() == 0.0
