"""Benchmark: one pass of TopK SAE training over planted sparse activations (not a test).

Compares, on the same data and hyperparameters (width, k, batch, lr, warmup, decay, dead-latent
window), in one run:
  ours     saeprobe.sae.train_sweep (sparse decoder, sparse encoder backward, AuxK)
  plain    a plain PyTorch TopK SAE: dense codes, dense decoder matmul, autograd
  saelens  SAELens 6.x TopKTrainingSAE + SAETrainer, b_dec at the data mean, run in its own
           virtual environment (--saelens-python), since it pins its own dependencies
and reports wall time, activations/s, held-out NMSE (sum ||x - x_hat||^2 / sum ||x - mean||^2,
float64), L0 and dead fraction (never active on the held-out set) for each, all measured by
`saeprobe.sae.evaluate` on the same held-out rows. The SAELens run also checks that SAELens loads
our SAELens export (`SAE.load_from_disk`) and reproduces our reconstructions.

CPU (default):  python benchmarks/sae_train.py                       # d 512, width 4096, 1M rows
quick:          python benchmarks/sae_train.py --n 100000 --skip-saelens
GPU:            python benchmarks/sae_train.py --device cuda --d 1024 --width 16384

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SAELENS_PYTHON = sys.executable  # sae-lens is a dev dependency of the project


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="training activations")
    p.add_argument("--n-heldout", type=int, default=16_384)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--decay-fraction", type=float, default=0.2)
    p.add_argument("--dead-after-tokens", type=int, default=250_000)
    p.add_argument("--atoms", type=int, default=None, help="planted atoms (default 2 * width)")
    p.add_argument("--k-true", type=int, default=32, help="planted atoms per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--skip-saelens", action="store_true")
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--saelens-python", default=DEFAULT_SAELENS_PYTHON)
    p.add_argument("--workdir", default=str(HERE / "out" / "sae_train"))
    p.add_argument("--worker", choices=("saelens",), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- data ---------------------------------------------------------------------------------------


def make_data(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path]:
    """Planted sparse activations saved as .npy (cached by their parameters)."""
    from saeprobe.sae.synthetic import planted_sparse

    atoms = args.atoms or 2 * args.width
    tag = f"n{args.n}_h{args.n_heldout}_d{args.d}_a{atoms}_k{args.k_true}_s{args.seed}"
    train, held = workdir / f"train_{tag}.npy", workdir / f"held_{tag}.npy"
    if not (train.is_file() and held.is_file()):
        t0 = time.perf_counter()
        p = planted_sparse(
            args.n + args.n_heldout,
            args.d,
            atoms,
            args.k_true,
            seed=args.seed,
            noise=0.1,
            offset_norm=5.0,
        )
        np.save(held, p.x[args.n :])
        np.save(train, p.x[: args.n])
        print(f"data: {time.perf_counter() - t0:.1f}s -> {train}", file=sys.stderr)
    return train, held


def epoch_batches(x: np.ndarray, batch_size: int, seed: int) -> Any:
    """The batches of one shuffled epoch as float32 tensors (same order for every contender)."""
    import torch

    order = np.random.default_rng(seed).permutation(len(x))
    for i in range(len(x) // batch_size):
        rows = np.sort(order[i * batch_size : (i + 1) * batch_size])
        yield torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32))


# -- contenders ---------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace, train: Path, workdir: Path) -> tuple[dict, Any]:
    import torch

    from saeprobe.sae import SAEConfig, TrainConfig, load_npy, train_sweep

    dev = torch.device(args.device)
    cfg = SAEConfig(arch="topk", width=args.width, k=args.k)
    tc = TrainConfig(
        batch_size=args.batch_size,
        epochs=1,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        decay_fraction=args.decay_fraction,
        dead_after_tokens=args.dead_after_tokens,
        checkpoint_every=0,
        dtype=args.dtype,
    )
    source = load_npy(train, check=False)
    shutil.rmtree(workdir / "ours", ignore_errors=True)
    _sync(dev)
    t0 = time.perf_counter()
    sae = train_sweep(source, [cfg], tc, [workdir / "ours"], device=dev, seed=args.seed)[0]
    _sync(dev)
    return {"wall_s": time.perf_counter() - t0}, sae


def run_plain(args: argparse.Namespace, train: Path) -> tuple[dict, Any]:
    """Plain TopK SAE: dense codes and decoder matmul, autograd, same init and schedule."""
    import torch

    from saeprobe.sae import SAEConfig, build_sae

    dev = torch.device(args.device)
    x = np.load(train, mmap_mode="r")
    sample = np.asarray(x[: min(len(x), 16_384)], dtype=np.float64)
    scale = 1.0 / math.sqrt(float((sample**2).sum(1).mean()))
    mean = torch.from_numpy(sample.mean(0) * scale).float()
    d, width, k = args.d, args.width, args.k
    gen = torch.Generator().manual_seed(args.seed)
    w = torch.randn(width, d, generator=gen)
    w /= w.norm(dim=1, keepdim=True)
    W_dec = w.clone().to(dev).requires_grad_(True)
    W_enc = w.t().contiguous().to(dev).requires_grad_(True)
    b_enc = torch.zeros(width, device=dev, requires_grad=True)
    b_dec = mean.clone().to(dev).requires_grad_(True)
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=args.lr)
    total = len(x) // args.batch_size
    decay = int(total * args.decay_fraction)

    _sync(dev)
    t0 = time.perf_counter()
    for step, batch in enumerate(epoch_batches(x, args.batch_size, args.seed)):
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup_steps))
        if decay and step >= total - decay:
            lr *= (total - step) / decay
        for g in opt.param_groups:
            g["lr"] = lr
        xb = batch.to(dev) * scale
        with torch.autocast(dev.type, torch.bfloat16, enabled=args.dtype == "bfloat16"):
            pre = (xb - b_dec) @ W_enc + b_enc
            vals, idx = pre.topk(k, dim=1, sorted=False)
            codes = torch.zeros_like(pre).scatter(1, idx, vals.relu())
            x_hat = codes @ W_dec + b_dec
            loss = (x_hat.float() - xb).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g = W_dec.grad
            g -= (g * W_dec).sum(1, keepdim=True) * W_dec
        opt.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)
    _sync(dev)
    wall = time.perf_counter() - t0
    sae = build_sae(SAEConfig(arch="topk", width=width, k=k), d)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc.detach().cpu())
        sae.b_enc.copy_(b_enc.detach().cpu() / scale)
        sae.W_dec.copy_(W_dec.detach().cpu())
        sae.b_dec.copy_(b_dec.detach().cpu() / scale)
    return {"wall_s": wall}, sae


def run_saelens(
    args: argparse.Namespace, train: Path, workdir: Path, ours: Any
) -> tuple[dict, Any]:
    """Run the SAELens worker in its own interpreter; returns (figures, SAE with its weights)."""
    import torch
    from safetensors.torch import load_file

    from saeprobe.sae import SAEConfig, build_sae, export_saelens

    export_dir = workdir / "ours_saelens_export"
    export_saelens(ours, export_dir)
    out = workdir / "saelens"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        args.saelens_python,
        str(Path(__file__).resolve()),
        "--worker",
        "saelens",
        *sys.argv[1:],
    ]
    env = {**os.environ, "SAE_BENCH_TRAIN": str(train), "SAE_BENCH_OUT": str(out)}
    env["SAE_BENCH_EXPORT"] = str(export_dir)
    proc = subprocess.run(cmd, env=env, check=False, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"SAELens worker failed ({proc.returncode}); see stderr above")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    tensors = load_file(str(out / "weights.safetensors"))
    sae = build_sae(SAEConfig(arch="topk", width=args.width, k=args.k), args.d)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(tensors[name])
    return figures, sae


def saelens_worker(args: argparse.Namespace) -> None:
    """Runs under SAELens's interpreter: train, fold, save weights, check our export loads."""
    import torch
    from sae_lens import SAE, SAETrainer, TopKTrainingSAE
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    train = np.load(os.environ["SAE_BENCH_TRAIN"], mmap_mode="r")
    out = Path(os.environ["SAE_BENCH_OUT"])
    n, d = train.shape
    dev = args.device
    steps = n // args.batch_size
    sample = np.asarray(train[: min(n, 16_384)], dtype=np.float64)
    # SAELens's own normalisation (expected_average_only_in): E||x|| -> sqrt(d_in)
    factor = math.sqrt(d) / float(np.linalg.norm(sample, axis=1).mean())
    cfg = TopKTrainingSAEConfig(
        d_in=d,
        d_sae=args.width,
        k=args.k,
        device=dev,
        normalize_activations="expected_average_only_in",
    )
    sae = TopKTrainingSAE(cfg)
    with torch.no_grad():
        sae.b_dec.copy_(torch.from_numpy(sample.mean(0) * factor).float())
    tcfg = SAETrainerConfig(
        total_training_samples=steps * args.batch_size,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        lr_end=args.lr,
        lr_warm_up_steps=args.warmup_steps,
        lr_decay_steps=int(steps * args.decay_fraction),
        device=dev,
        dead_feature_window=max(1, args.dead_after_tokens // args.batch_size),
        feature_sampling_window=max(1, steps),
        autocast=args.dtype == "bfloat16",
    )
    trainer = SAETrainer(
        cfg=tcfg, sae=sae, data_provider=epoch_batches(train, args.batch_size, args.seed)
    )
    trainer.activation_scaler.scaling_factor = factor
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.fit()
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    sae.fold_W_dec_norm()
    tensors = {
        k: getattr(sae, k).detach().cpu().contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    save_file(tensors, str(out / "weights.safetensors"))

    # SAELens loads our export with its own loader and reproduces our outputs
    exported = SAE.load_from_disk(os.environ["SAE_BENCH_EXPORT"], device="cpu")
    ref = np.load(Path(os.environ["SAE_BENCH_EXPORT"]) / "check.npz")
    with torch.no_grad():
        x = torch.from_numpy(ref["x"])
        err = float((exported(x) - torch.from_numpy(ref["x_hat"])).abs().max())
        scale = float(torch.from_numpy(ref["x_hat"]).abs().max())
    print(json.dumps({"wall_s": wall, "export_roundtrip_max_abs_err": err, "export_scale": scale}))


def _sync(dev: Any) -> None:
    import torch

    if getattr(dev, "type", str(dev)).startswith("cuda"):
        torch.cuda.synchronize()


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    if args.worker == "saelens":
        saelens_worker(args)
        return
    import torch

    from saeprobe.sae import evaluate, load_npy

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train, held = make_data(args, workdir)
    held_src = load_npy(held, check=False)
    n_used = (args.n // args.batch_size) * args.batch_size
    results: dict[str, Any] = {
        "config": {
            k: getattr(args, k)
            for k in ("n", "d", "width", "k", "batch_size", "lr", "device", "threads", "dtype")
        }
        | {"atoms": args.atoms or 2 * args.width, "k_true": args.k_true},
        "nmse_definition": "sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 on held-out rows",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_at_start": os.getloadavg()[0],
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        },
    }

    def record(name: str, figures: dict, sae: Any) -> None:
        m = evaluate(sae.to(args.device), held_src.sequential(2048), device=args.device)
        figures.update(
            acts_per_s=n_used / figures["wall_s"],
            nmse=m["nmse"],
            l0=m["l0"],
            dead_frac=m["dead_frac"],
            dense_frac=m["dense_frac"],
        )
        results[name] = figures
        print(f"{name}: {json.dumps(figures)}", file=sys.stderr, flush=True)

    figures, ours = run_ours(args, train, workdir)
    record("ours", figures, ours)
    if not args.skip_plain:
        record("plain", *run_plain(args, train))
    if not args.skip_saelens:
        with torch.no_grad():
            x = torch.from_numpy(np.array(np.load(held, mmap_mode="r")[:256]))
            x_hat = ours.cpu()(x).x_hat
        export_dir = workdir / "ours_saelens_export"
        export_dir.mkdir(parents=True, exist_ok=True)
        np.savez(export_dir / "check.npz", x=x.numpy(), x_hat=x_hat.numpy())
        record("saelens", *run_saelens(args, train, workdir, ours))
        s = results["saelens"]
        results["speedup_vs_saelens"] = s["wall_s"] / results["ours"]["wall_s"]
    if "plain" in results:
        results["speedup_vs_plain"] = results["plain"]["wall_s"] / results["ours"]["wall_s"]
    results["machine"]["load_avg_at_end"] = os.getloadavg()[0]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
