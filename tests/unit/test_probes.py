"""Linear probes: convergence reporting, warm starts, the scale floor, per-class masks."""

import logging

import numpy as np
import pytest
import torch

from saeprobe.eval.probes import feature_scale, fit_probe, per_class_mask


def _blobs(seed: int = 0, n: int = 240, d: int = 6, classes: int = 3, spread: float = 3.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n // classes)
    centres = rng.standard_normal((classes, d)) * spread
    return centres[y] + rng.standard_normal((len(y), d)), y


def test_probe_on_separable_data_converges_and_says_so() -> None:
    x, y = _blobs()
    probe = fit_probe(x, y, 3, [1e-2], 0.0, seed=0)
    assert probe.fit.converged
    assert probe.fit.grad_norm <= 1e-4
    assert 0 < probe.fit.iterations < 500
    assert np.isfinite(probe.fit.loss)
    assert np.mean(probe.predict(x) == y) > 0.95
    assert probe.fit.columns()["probe_converged"] is True


def test_probe_with_too_small_a_budget_reports_not_converged(caplog) -> None:
    x, y = _blobs()
    with caplog.at_level(logging.WARNING, logger="saeprobe.eval.probes"):
        probe = fit_probe(x, y, 3, [1e-4], 0.0, seed=0, max_iter=2)
    assert not probe.fit.converged
    assert probe.fit.iterations == 2
    assert probe.fit.grad_norm > 1e-4
    assert "not converged" in caplog.text


def test_warm_start_reaches_the_cold_start_solution() -> None:
    x, y = _blobs(seed=1, spread=1.0)  # overlapping classes: a well-determined optimum
    decays = [1e-3, 1e-2, 1e-1]
    warm = fit_probe(x, y, 3, decays, 0.2, seed=0, warm_start=True)
    cold = fit_probe(x, y, 3, decays, 0.2, seed=0, warm_start=False)
    assert warm.fit.converged and cold.fit.converged
    assert warm.weight_decay == cold.weight_decay
    torch.testing.assert_close(warm.weight, cold.weight, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(warm.bias, cold.bias, atol=2e-3, rtol=1e-3)


def test_scale_floor_keeps_a_rare_unit_from_being_blown_up() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((10000, 5))).astype(np.float32)
    x[:, 4] = 0.0
    x[7, 4] = 1.0  # a latent active on one image
    _, std = feature_scale(torch.from_numpy(x), std_floor=0.1)
    typical = float(np.median(x[:, :4].std(axis=0, ddof=1)))
    assert float(std[4]) == pytest.approx(0.1 * typical, rel=0.05)
    _, raw_std = feature_scale(torch.from_numpy(x), std_floor=0.0)
    assert float(raw_std[4]) < 0.05 * typical  # without the floor: the rare unit's own std


def test_per_class_mask_picks_each_class_its_own_units() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    x = rng.standard_normal((200, 12)) * 0.5
    x[np.arange(200), 2 * y] += 3.0  # class c lives on unit 2c
    mask = per_class_mask(x, y, 4, k=1)
    assert mask.shape == (12, 4) and mask.sum(axis=0).tolist() == [1] * 4
    assert [int(np.flatnonzero(mask[:, c])[0]) for c in range(4)] == [0, 2, 4, 6]
    probe = fit_probe(x, y, 4, [1e-3], 0.0, seed=0, mask=mask)
    assert probe.fit.converged
    assert (probe.weight.numpy()[~mask] == 0).all()
    assert np.mean(probe.predict(x) == y) > 0.9
