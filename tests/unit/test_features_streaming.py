"""The vision tasks' streamed computations equal the whole-matrix ones they replace."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.eval.features import ModelSites, SaeCodes, SiteData, sae_codes
from saeprobe.eval.ood_detection import (
    FeatureScorers,
    KNNScore,
    MahalanobisScore,
    invert_spd_in_place,
)
from saeprobe.eval.semantics import top_images
from saeprobe.sae.config import SAEConfig
from saeprobe.sae.io import save_sae
from saeprobe.sae.models import build_sae

CPU = torch.device("cpu")


def _sae(seed: int, width: int = 32, d: int = 8):
    sae = build_sae(SAEConfig(arch="topk", width=width, k=4), d).eval()
    with torch.no_grad():
        sae.initialize(seed)
    return sae


def _multi_token(n_images: int = 7, d: int = 8, seed: int = 0) -> SiteData:
    rng = np.random.default_rng(seed)
    image_of_row = rng.permutation(np.repeat(np.arange(n_images), 3))  # 3 tokens each, unsorted
    tokens = rng.standard_normal((len(image_of_row), d)).astype(np.float32)
    images = pd.DataFrame({"index": np.arange(n_images), "label": ["a"] * n_images})
    return SiteData(tokens=tokens, image_of_row=image_of_row, images=images)


def _reference_means(rows: np.ndarray, data: SiteData) -> np.ndarray:
    return np.stack(
        [rows[data.image_of_row == i].astype(np.float64).mean(axis=0) for i in range(data.n_images)]
    )


def test_multi_token_codes_are_averaged_per_image_chunk_by_chunk() -> None:
    data, sae = _multi_token(), _sae(0)
    with torch.no_grad():
        token_codes = sae.encode(torch.from_numpy(data.tokens)).numpy()
    expected = _reference_means(token_codes, data)
    np.testing.assert_allclose(sae_codes(sae, data, chunk=4), expected, rtol=1e-5, atol=1e-6)
    reference = _reference_means(data.tokens, data)
    np.testing.assert_allclose(
        data.per_image(data.tokens, chunk=5), reference, rtol=1e-5, atol=1e-6
    )
    latents = np.array([3, 0, 17])
    np.testing.assert_allclose(sae_codes(sae, data, chunk=4, latents=latents),
                               expected[:, latents], rtol=1e-5, atol=1e-6)  # fmt: skip
    # the check can fail: another SAE's codes are not these
    assert not np.allclose(sae_codes(_sae(1), data), expected, atol=1e-3)


def test_sae_codes_keep_one_sae_at_a_time(tmp_path: Path) -> None:
    data = _multi_token()
    for i, name in enumerate(["a", "b"]):
        save_sae(_sae(i), tmp_path / "saes" / "m" / "s" / name)
    codes = SaeCodes(
        ModelSites("m", ["s"], ["a", "b"], tmp_path, tmp_path / "saes"), "s", data, CPU
    )
    first = codes["a"]
    assert np.count_nonzero(first) > 0
    assert codes["a"] is first  # asked again: kept
    second = codes["b"]
    assert codes._last[0] == "b" and codes._last[1] is second  # only the last one is kept
    np.testing.assert_allclose(second, sae_codes(_sae(1), data), rtol=1e-6)
    assert list(codes) == ["a", "b"] and len(codes) == 2


def test_top_images_by_blocks_match_one_topk() -> None:
    x = np.random.default_rng(0).standard_normal((50, 23)).astype(np.float32)
    blocked, whole = top_images(x, 5, False, block=4), top_images(x, 5, False, block=1000)
    np.testing.assert_array_equal(blocked.indices, whole.indices)
    _, indices = torch.from_numpy(x).topk(5, dim=0)
    np.testing.assert_array_equal(blocked.indices, indices.T.numpy())


def test_knn_and_mahalanobis_match_their_whole_matrix_definitions() -> None:
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((300, 12)).astype(np.float32) * rng.uniform(0.5, 3, (300, 1))
    query = rng.standard_normal((40, 12)).astype(np.float32)
    normed = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    kth = np.sort(q @ normed.T, axis=1)[:, -5]
    np.testing.assert_allclose(KNNScore(bank, 5, chunk=7)(query), np.sqrt(2 - 2 * kth), atol=1e-5)
    y = rng.integers(0, 3, 300)
    maha = MahalanobisScore(bank, y, 3, chunk=64)
    means = np.stack([bank[y == c].astype(np.float64).mean(axis=0) for c in range(3)])
    centred = bank - means[y]
    cov = centred.T @ centred / 299
    cov += 1e-6 * np.diag(cov).mean() * np.eye(12)
    precision = np.linalg.inv(cov)
    diff = query[:, None, :].astype(np.float64) - means[None]
    expected = np.einsum("nci,ij,ncj->nc", diff, precision, diff).min(axis=1)
    np.testing.assert_allclose(maha(query), expected, rtol=1e-8)


def test_in_place_inverse_equals_the_inverse_and_rejects_an_indefinite_matrix() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 40))
    spd = a.T @ a / 300 + 0.1 * np.eye(40)
    work = spd.copy()
    address = work.__array_interface__["data"][0]
    assert invert_spd_in_place(work, block=7)  # blocks that do not divide the size
    assert work.__array_interface__["data"][0] == address
    np.testing.assert_allclose(work, np.linalg.inv(spd), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(work, work.T)
    indefinite = np.diag([1.0, -1.0, 2.0])
    assert not invert_spd_in_place(indefinite)


def test_feature_scorers_drop_the_training_features_unless_the_bank_is_all_of_them() -> None:
    """A subset bank is a copy: the scorers keep no reference to x_train, which the caller can
    then free before the evaluation sets are encoded; a bank of all rows is x_train itself."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    options = dict(knn_k=3, weight_decays=[1e-2], val_fraction=0.0, seed=0)
    for bank, kept in ((30, False), (None, True)):
        x = (rng.standard_normal((120, 6)) + y[:, None]).astype(np.float32)
        ref = weakref.ref(x)
        scorers = FeatureScorers(x, y, 3, knn_bank=bank, **options)
        del x
        gc.collect()
        assert (ref() is not None) == kept
        scores = scorers(rng.standard_normal((5, 6)).astype(np.float32))
        assert sorted(scores) == ["energy", "knn", "mahalanobis", "msp"]
