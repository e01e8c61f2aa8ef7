"""SAELens export round trip: SAELens 6.x loads our export with its own loader and agrees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saeprobe.sae import SAEConfig, TrainConfig, export_saelens, load_sae, train_sweep
from saeprobe.sae.synthetic import planted_sparse

sae_lens = pytest.importorskip(
    "sae_lens",
    reason="sae_lens is not installed (it is not a project dependency); the SAELens export "
    "round trip is not checked in this environment",
)

CASES = {
    "relu": SAEConfig(arch="relu", width=32, k=None, l1=0.3),
    "topk": SAEConfig(arch="topk", width=32, k=3),
    "batchtopk": SAEConfig(arch="batchtopk", width=32, k=3),
    "jumprelu": SAEConfig(arch="jumprelu", width=32, k=None, l0=0.02),
    "matryoshka": SAEConfig(arch="matryoshka", width=32, k=3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_saelens_loads_export(name: str, tmp_path: Path) -> None:
    p = planted_sparse(2048, 16, 24, 3, seed=0, offset_norm=2.0)
    x = p.x * 37.0  # raw units far from unit norm: the export must carry the scaling
    tc = TrainConfig(batch_size=128, epochs=1, lr=1e-2, warmup_steps=5, checkpoint_every=0)
    train_sweep(x[:1536], [CASES[name]], tc, [tmp_path / "sae"], device="cpu", progress=False)
    ours = load_sae(tmp_path / "sae")
    export_saelens(ours, tmp_path / "saelens")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "saelens"), device="cpu")
    held = torch.from_numpy(x[1536:])
    with torch.no_grad():
        codes = ours.encode(held)
        assert torch.allclose(theirs.encode(held), codes, atol=1e-4, rtol=1e-4)
        assert torch.allclose(theirs(held), ours(held).x_hat, atol=1e-3, rtol=1e-4)
