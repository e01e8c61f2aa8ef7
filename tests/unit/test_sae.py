"""SAE library: architectures on planted data, invariants, resume, sweeps, metrics, CLI."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from saeprobe.sae import (
    ArraySource,
    SAEConfig,
    TrainConfig,
    build_sae,
    downstream_recovered,
    evaluate,
    load_sae,
    nmse,
    reconstruct,
    train_sweep,
)
from saeprobe.sae import sparse as sp
from saeprobe.sae.cli import main as cli_main
from saeprobe.sae.config import ConfigError
from saeprobe.sae.synthetic import planted_sparse

ROOT = Path(__file__).resolve().parents[2]
D, ATOMS, K_TRUE = 16, 24, 3


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # tiny tensors: one thread avoids OpenMP wake-up costs on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train (4096, 16), held-out (1024, 16), atoms (24, 16))."""
    p = planted_sparse(5120, D, ATOMS, K_TRUE, seed=0, noise=0.02, offset_norm=2.0)
    return p.x[:4096], p.x[4096:], p.atoms


def _tc(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        batch_size=128,
        epochs=4,
        lr=1e-2,
        warmup_steps=5,
        checkpoint_every=0,
        init_sample_size=2048,
        dead_after_tokens=1024,
        encode_chunk=64,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


ARCH_CASES = {
    "relu": SAEConfig(arch="relu", width=32, k=None, l1=0.3),
    "topk": SAEConfig(arch="topk", width=32, k=K_TRUE),
    "batchtopk": SAEConfig(arch="batchtopk", width=32, k=K_TRUE, batchtopk_threshold_lr=0.1),
    "jumprelu": SAEConfig(arch="jumprelu", width=32, k=None, l0=0.02),
    "matryoshka_batchtopk": SAEConfig(arch="matryoshka", width=32, k=K_TRUE),
    "matryoshka_topk": SAEConfig(arch="matryoshka", matryoshka_base="topk", width=32, k=K_TRUE),
}


@pytest.mark.parametrize("name", list(ARCH_CASES))
def test_architecture_learns_planted_dictionary(name: str, planted, tmp_path: Path) -> None:
    train, held, atoms = planted
    cfg = ARCH_CASES[name]
    sae = train_sweep(train, [cfg], _tc(), [tmp_path / name], device="cpu", seed=0, progress=False)[
        0
    ]
    m = evaluate(sae, ArraySource(held).sequential(256))
    # trivial baseline (predict the mean) has nmse 1; a sparse code of the planted atoms ~0
    assert m["nmse"] < 0.25, m
    assert m["l0"] < 12, m
    # the decoder finds the frequent ground-truth atoms
    cos = torch.from_numpy(atoms[:8]) @ sae.W_dec.detach().T
    assert float(cos.max(dim=1).values.mean()) > 0.8
    # unit-norm decoder invariant
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert (tmp_path / name / "sae.safetensors").is_file()
    assert not (tmp_path / name / "checkpoint").exists()


def test_decoder_rows_stay_unit_norm_during_training(planted, tmp_path: Path) -> None:
    train, _, _ = planted
    seen: list[float] = []

    def check(step: int, saes: list) -> None:
        w = saes[0].W_dec.detach()
        seen.append(float((w.norm(dim=1) - 1).abs().max()))

    train_sweep(
        train,
        [SAEConfig(arch="topk", width=32, k=3)],
        _tc(epochs=1),
        [tmp_path / "s"],
        device="cpu",
        progress=False,
        callback=check,
    )
    assert len(seen) == 4096 // 128
    assert max(seen) < 1e-5


def test_saved_sae_works_in_raw_units(planted, tmp_path: Path) -> None:
    train, held, _ = planted
    big = 1000.0
    cfg = SAEConfig(arch="topk", width=32, k=K_TRUE)
    small_sae = train_sweep(train, [cfg], _tc(), [tmp_path / "a"], device="cpu", progress=False)[0]
    train_sweep(train * big, [cfg], _tc(), [tmp_path / "b"], device="cpu", progress=False)
    sae = load_sae(tmp_path / "b")
    assert float(sae.input_scale) == 1.0
    saved = json.loads((tmp_path / "b" / "cfg.json").read_text())
    mean_sq = float(((train.astype(np.float64) * big) ** 2).sum(1).mean())
    expected_scale = 1.0 / math.sqrt(mean_sq)
    assert saved["trained_input_scale"] == pytest.approx(expected_scale, rel=0.05)
    x = torch.from_numpy(held * big)
    x_hat = sae(x).x_hat
    # takes and returns raw activations: same quality as the unscaled run, in big units
    small = torch.from_numpy(held)
    assert nmse(x, x_hat) == pytest.approx(nmse(small, small_sae(small).x_hat), rel=0.05)
    assert nmse(x, x_hat) < 0.25


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "relu"])
def test_resume_after_kill_is_bit_identical(arch: str, planted, tmp_path: Path, caplog) -> None:
    train, _, _ = planted
    cfgs = [ARCH_CASES[arch], SAEConfig(arch="matryoshka", width=24, k=2)]
    tc = _tc(epochs=2, checkpoint_every=5)
    ref = train_sweep(
        train,
        cfgs,
        tc,
        [tmp_path / "ref0", tmp_path / "ref1"],
        device="cpu",
        seed=3,
        progress=False,
    )

    class Kill(Exception):
        pass

    def kill(step: int, saes: list) -> None:
        if step == 37:  # past the epoch boundary (32 steps), between checkpoints 35 and 40
            raise Kill

    dirs = [tmp_path / "run0", tmp_path / "run1"]
    with pytest.raises(Kill):
        train_sweep(train, cfgs, tc, dirs, device="cpu", seed=3, progress=False, callback=kill)
    assert (dirs[0] / "checkpoint" / "step_000000035.json").is_file()
    with caplog.at_level(logging.INFO, logger="saeprobe.sae"):
        resumed = train_sweep(train, cfgs, tc, dirs, device="cpu", seed=3, progress=False)
    assert "resuming from checkpoint at step 35" in caplog.text
    for a, b in zip(ref, resumed, strict=True):
        for (name, ta), (_, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(ta, tb), name


def test_sweep_equals_each_sae_alone(planted, tmp_path: Path) -> None:
    train, _, _ = planted
    cfgs = [
        SAEConfig(arch="topk", width=32, k=3),
        SAEConfig(arch="relu", width=16, k=None, l1=0.3, lr=3e-3),
        SAEConfig(arch="batchtopk", width=24, k=4),
    ]
    tc = _tc(epochs=1)
    dirs = [tmp_path / f"sweep{i}" for i in range(3)]
    swept = train_sweep(train, cfgs, tc, dirs, device="cpu", seed=5, progress=False)
    for i, cfg in enumerate(cfgs):
        alone = train_sweep(
            train, [cfg], tc, [tmp_path / f"alone{i}"], device="cpu", seed=5, progress=False
        )[0]
        for (name, ta), (_, tb) in zip(
            swept[i].state_dict().items(), alone.state_dict().items(), strict=True
        ):
            assert torch.equal(ta, tb), (cfg.arch, name)


def test_batchtopk_threshold_gives_about_k_active(planted, tmp_path: Path) -> None:
    train, held, _ = planted
    k = 4
    cfg = SAEConfig(arch="batchtopk", width=32, k=k, batchtopk_threshold_lr=0.05)
    sae = train_sweep(train, [cfg], _tc(epochs=6), [tmp_path / "b"], device="cpu", progress=False)[
        0
    ]
    m = evaluate(sae, ArraySource(held).sequential(256))
    assert m["l0"] == pytest.approx(k, rel=0.25)
    assert float(sae.threshold) > 0


def test_sparse_kernels_match_dense_autograd() -> None:
    torch.manual_seed(0)
    batch, d, width, k = 12, 8, 20, 3
    x = torch.randn(batch, d, dtype=torch.float64, requires_grad=True)
    params = {
        "b_dec": torch.randn(d, dtype=torch.float64),
        "w_enc": torch.randn(d, width, dtype=torch.float64),
        "b_enc": torch.randn(width, dtype=torch.float64),
        "w_dec": torch.randn(width, d, dtype=torch.float64),
    }
    for p in params.values():
        p.requires_grad_(True)
    target = torch.randn(batch, d, dtype=torch.float64)

    x_c = x.detach() - params["b_dec"].detach()
    values, latents = sp.select_topk(x_c, params["w_enc"].detach(), params["b_enc"].detach(), k, 5)
    codes = sp.uniform_codes(values.double(), latents)
    order, latent_offsets = codes.by_latent(width)
    pre = sp.SelectedPreacts.apply(
        codes.values,
        x,
        params["b_dec"],
        params["w_enc"],
        params["b_enc"],
        codes.rows,
        codes.latents,
        codes.offsets,
        order,
        latent_offsets,
    )
    out = sp.decode(codes.with_values(torch.relu(pre)), params["w_dec"])
    loss = (out - target).pow(2).sum()
    grads = torch.autograd.grad(loss, [x, *params.values()])

    dense_pre = (x - params["b_dec"]) @ params["w_enc"] + params["b_enc"]
    mask = torch.zeros_like(dense_pre).scatter_(1, latents, 1.0)
    dense_out = (torch.relu(dense_pre) * mask) @ params["w_dec"]
    ref = torch.autograd.grad((dense_out - target).pow(2).sum(), [x, *params.values()])
    assert torch.allclose(out, dense_out)
    for g, r in zip(grads, ref, strict=True):
        assert torch.allclose(g, r, atol=1e-10)

    g, w = torch.randn(batch, d), torch.randn(width, d)
    via_csr = sp.sampled_dot(g, w, codes.rows, codes.latents, codes.offsets, csr=True)
    gathered = sp.sampled_dot(g, w, codes.rows, codes.latents, codes.offsets, csr=False)
    assert torch.allclose(via_csr, gathered, atol=1e-5)
    assert torch.allclose(gathered, (g[codes.rows] * w[codes.latents]).sum(-1), atol=1e-5)

    # batch top-k selection equals a plain top-k over the flattened batch
    pre_all = torch.randn(7, 30)
    vals, rows, lats = sp.select_batchtopk(pre_all, 10)
    assert sorted(vals.tolist()) == sorted(pre_all.flatten().topk(10).values.tolist())
    assert torch.equal(pre_all[rows, lats], vals)
    assert bool((rows[1:] >= rows[:-1]).all())


def _identity_sae(d: int) -> torch.nn.Module:
    """ReLU SAE with codes (relu(x), relu(-x)) that reconstructs x exactly."""
    sae = build_sae(SAEConfig(arch="relu", width=2 * d, k=None), d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae.eval()


def test_metric_definitions_by_hand() -> None:
    x = torch.tensor(
        [[1.0, 0.0, 2.0], [3.0, 0.0, -1.0], [2.0, 0.0, 1.0], [4.0, 0.0, 2.0]], dtype=torch.float32
    )
    ident = _identity_sae(3)
    m = evaluate(ident, [x[:3], x[3:]])
    assert m["nmse"] == pytest.approx(0.0, abs=1e-12)
    assert m["cos_sim"] == pytest.approx(1.0)
    # active codes: relu(x) > 0 -> columns 0 (4 rows), 2 (3 rows); relu(-x) > 0 -> column 5 (1 row)
    assert m["l0"] == pytest.approx((4 + 3 + 1) / 4)
    assert m["dead_frac"] == pytest.approx(3 / 6)
    assert m["dense_frac"] == pytest.approx(3 / 6)

    mean_sae = build_sae(SAEConfig(arch="relu", width=4, k=None), 3)
    with torch.no_grad():
        mean_sae.b_dec.copy_(x.mean(0))  # W_dec = 0: x_hat = mean
    m = evaluate(mean_sae, [x])
    assert m["nmse"] == pytest.approx(1.0, abs=1e-12)
    x64 = x.double()
    sq = float(((x64 - x64.mean(0)) ** 2).sum())
    assert m["mse"] == pytest.approx(sq / 4)
    assert nmse(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    assert nmse(x, x) == 0.0
    assert downstream_recovered(0.8, 0.7, 0.2) == pytest.approx(0.5 / 0.6)
    assert math.isnan(downstream_recovered(0.5, 0.5, 0.5))


def test_reconstruct_keeps_token_shape(planted, tmp_path: Path) -> None:
    train, held, _ = planted
    sae = train_sweep(
        train,
        [SAEConfig(arch="topk", width=32, k=3)],
        _tc(epochs=1),
        [tmp_path / "r"],
        device="cpu",
        progress=False,
    )[0]
    x = torch.from_numpy(held[:24]).reshape(2, 12, D).half()
    out = reconstruct(sae, x, chunk=5)
    assert out.shape == x.shape and out.dtype == torch.float16
    flat = sae(x.reshape(-1, D).float()).x_hat
    assert torch.allclose(out.reshape(-1, D).float(), flat, atol=1e-2)


def test_store_source_adapter(planted, tmp_path: Path) -> None:
    from saeprobe.activations import ActivationStore
    from saeprobe.sae.sources import StoreSource

    train, _, _ = planted
    site = tmp_path / "store" / "L0_cls"
    site.mkdir(parents=True)
    shards = []
    for i, part in enumerate(np.array_split(train, 3)):
        np.save(site / f"shard_{i:05d}.npy", part.astype(np.float16))
        shards.append({"file": f"shard_{i:05d}.npy", "rows": len(part)})
    meta = {
        "site": "L0_cls",
        "dim": D,
        "dtype": "float16",
        "count": len(train),
        "tokens_per_image": 1,
        "mean": train.mean(0).tolist(),
        "shards": shards,
    }
    (site / "metadata.json").write_text(json.dumps(meta))
    source = StoreSource(ActivationStore(site))
    assert len(source) == len(train) and source.dim == D
    a = list(source.batches(100, epoch=1, seed=2))
    b = list(source.batches(100, epoch=1, seed=2, start=7))
    assert len(a) == len(train) // 100 and all(
        torch.equal(x, y) for x, y in zip(a[7:], b, strict=True)
    )
    sae = train_sweep(
        site,
        [SAEConfig(arch="topk", width=32, k=3)],
        _tc(epochs=1),
        [tmp_path / "s"],
        device="cpu",
        progress=False,
    )[0]
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["activation_spec"]["site"] == "L0_cls"
    assert sae.W_dec.shape == (32, D)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"width \(4\) must be >= k \(8\)"):
        SAEConfig(arch="topk", width=4, k=8)
    with pytest.raises(ConfigError, match="arch"):
        SAEConfig(arch="gated")
    with pytest.raises(ConfigError, match="matryoshka_prefixes"):
        SAEConfig(arch="matryoshka", width=32, k=2, matryoshka_prefixes=(8, 4, 32))
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown key"):
        SAEConfig.from_dict({"arch": "topk", "widht": 3})


# -- command line ---------------------------------------------------------------------------


def _train_args(acts: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--activations",
        str(acts),
        "--arch",
        "topk",
        "--width",
        "32",
        "--k",
        "3",
        "--batch-size",
        "128",
        "--lr",
        "0.01",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
        "--checkpoint-every",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--warmup-steps",
        "5",
        *extra,
    ]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "saeprobe.sae", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_cli_train_resume_and_eval(planted, tmp_path: Path) -> None:
    train, held, _ = planted
    acts = tmp_path / "acts.npy"
    np.save(acts, train)
    out = tmp_path / "sae"

    class Kill(Exception):
        pass

    def kill(step: int, saes: list) -> None:
        if step == 10:
            raise Kill

    with pytest.raises(Kill):
        cli_main(_train_args(acts, out), callback=kill)
    assert (out / "checkpoint" / "step_000000008.json").is_file()

    done = _run_cli(*_train_args(acts, out))
    assert done.returncode == 0, done.stderr
    assert "resuming from checkpoint at step 8" in done.stderr
    assert "resuming from checkpoint at step 8" in (out / "train.log").read_text()
    for name in ("cfg.json", "sae.safetensors", "metrics.json"):
        assert (out / name).is_file(), name
    trained = json.loads(done.stdout.strip().splitlines()[-1])
    assert trained["nmse"] < 0.5

    held_path = tmp_path / "held.npy"
    np.save(held_path, held)
    ev = _run_cli("eval", "--sae", str(out), "--activations", str(held_path))
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout.strip().splitlines()[-1])
    assert {"nmse", "l0", "dead_frac", "dense_frac", "cos_sim"} <= set(metrics)
    assert metrics["nmse"] < 0.5 and metrics["l0"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "acts.npy: activations file not found"),
        ("3d", "expected a 2-D array"),
        ("nan", "non-finite values"),
        ("width", r"--width \(2\) must be >= --k \(3\)"),
        ("batch", r"batch_size \(100000\) exceeds the number of training rows"),
    ],
)
def test_cli_bad_input_names_the_problem(case: str, message: str, tmp_path: Path, capsys) -> None:
    acts = tmp_path / "acts.npy"
    extra: list[str] = []
    data = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    if case == "3d":
        data = data.reshape(30, 10, 4)
    if case == "nan":
        data[17, 2] = np.nan
    if case != "missing":
        np.save(acts, data)
    args = _train_args(acts, tmp_path / "out")
    if case == "width":
        args[args.index("--width") + 1] = "2"
    if case == "batch":
        args[args.index("--batch-size") + 1] = "100000"
    assert cli_main(args + extra) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    if case in ("3d", "nan", "missing"):
        assert str(acts) in err
