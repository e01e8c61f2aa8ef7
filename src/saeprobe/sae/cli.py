"""Command line: `python -m saeprobe.sae train|eval|export`.

train  --activations ACTS.npy --arch topk --width W --k K --batch-size B --lr LR --epochs E
       --seed S --out DIR [--checkpoint-every N] [...]
       Trains one SAE on a 2-D float .npy array (or an activation-store directory), holding out
       a seeded fraction of rows (--holdout) for `metrics.json`. DIR receives the checkpoints,
       `cfg.json`, `sae.safetensors`, `metrics.json` and `train.log`. Rerunning the same command
       on an unfinished DIR resumes from its last checkpoint (and says so in the log).
eval   --sae DIR --activations ACTS.npy: prints the metrics as one JSON object (last line).
export --sae DIR --out SAELENS_DIR: writes an SAELens 6.x directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from saeprobe.sae import io
from saeprobe.sae.config import ARCHITECTURES, ConfigError, SAEConfig, TrainConfig
from saeprobe.sae.metrics import evaluate
from saeprobe.sae.sources import (
    ArraySource,
    BatchSource,
    SourceError,
    StoreSource,
    load_npy,
    split_rows,
)
from saeprobe.sae.trainer import StepCallback, train_sweep

log = logging.getLogger("saeprobe.sae")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m saeprobe.sae", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one SAE on a 2-D activation array")
    t.add_argument("--activations", required=True, help="2-D float .npy (rows, dim) or store dir")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--arch", default="topk", choices=ARCHITECTURES)
    t.add_argument("--width", type=int, required=True, help="number of latents")
    t.add_argument("--k", type=int, default=None, help="active latents (k architectures)")
    t.add_argument("--l1", type=float, default=None, help="relu: L1 coefficient")
    t.add_argument("--l0", type=float, default=None, help="jumprelu: L0 coefficient")
    t.add_argument("--bandwidth", type=float, default=None, help="jumprelu: STE bandwidth")
    t.add_argument("--matryoshka-base", choices=("topk", "batchtopk"), default="batchtopk")
    t.add_argument(
        "--prefixes", type=str, default=None, help="matryoshka: comma-separated prefix sizes"
    )
    t.add_argument("--auxk-coef", type=float, default=None)
    t.add_argument("--b-dec-init", choices=("geometric_median", "mean", "zeros"), default=None)
    t.add_argument("--batch-size", type=int, default=4096)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--warmup-steps", type=int, default=None)
    t.add_argument("--dead-after-tokens", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=500, help="steps; 0 disables")
    t.add_argument("--holdout", type=float, default=0.05, help="fraction of rows held out")
    t.add_argument("--eval-activations", default=None, help="held-out .npy instead of --holdout")
    t.add_argument("--device", default="auto")
    t.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--export-saelens", action="store_true", help="also write DIR/saelens")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="metrics of a trained SAE on activations")
    e.add_argument("--sae", required=True, help="SAE directory")
    e.add_argument("--activations", required=True, help="2-D float .npy or store dir")
    e.add_argument("--batch-size", type=int, default=1024)
    e.add_argument("--device", default="cpu")

    x = sub.add_parser("export", help="write an SAELens 6.x directory")
    x.add_argument("--sae", required=True)
    x.add_argument("--out", required=True)
    return parser


def _sae_config(args: argparse.Namespace) -> SAEConfig:
    fields: dict = {"arch": args.arch, "width": args.width}
    if args.k is not None:
        fields["k"] = args.k
    elif args.arch not in ("topk", "batchtopk", "matryoshka"):
        fields["k"] = None
    for name, key in (
        ("l1", "l1"),
        ("l0", "l0"),
        ("bandwidth", "jumprelu_bandwidth"),
        ("auxk_coef", "auxk_coef"),
        ("b_dec_init", "b_dec_init"),
    ):
        if getattr(args, name) is not None:
            fields[key] = getattr(args, name)
    if args.arch == "matryoshka":
        fields["matryoshka_base"] = args.matryoshka_base
        if args.prefixes:
            fields["matryoshka_prefixes"] = tuple(int(p) for p in args.prefixes.split(","))
    if args.arch in ("topk", "batchtopk", "matryoshka") and args.k is None:
        raise ConfigError(f"--k is required for --arch {args.arch}")
    if args.k is not None and args.width < args.k:
        raise ConfigError(f"--width ({args.width}) must be >= --k ({args.k})")
    return SAEConfig(**fields)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    fields: dict = {
        "batch_size": args.batch_size,
        "lr": args.lr,
        "epochs": args.epochs,
        "checkpoint_every": args.checkpoint_every,
        "dtype": args.dtype,
    }
    if args.warmup_steps is not None:
        fields["warmup_steps"] = args.warmup_steps
    if args.dead_after_tokens is not None:
        fields["dead_after_tokens"] = args.dead_after_tokens
    for key, value in fields.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"--{key.replace('_', '-')}: expected >= 0, got {value}")
    return TrainConfig(**fields)


def _open_training(args: argparse.Namespace) -> tuple[BatchSource, BatchSource | None]:
    """(training source, held-out source or None) from --activations / --holdout."""
    path = Path(args.activations)
    if path.is_dir():
        if args.eval_activations is None:
            return StoreSource(path), None
        return StoreSource(path), _open_eval(args.eval_activations)
    full = load_npy(path)
    if args.eval_activations is not None:
        return full, _open_eval(args.eval_activations)
    if args.holdout == 0:
        return full, None
    train_rows, held_rows = split_rows(len(full), args.holdout, args.seed)
    assert isinstance(full, ArraySource)
    return (
        ArraySource(full.array, train_rows, name=full.name),
        ArraySource(full.array, held_rows, name=f"{full.name} (held out)"),
    )


def _open_eval(path_str: str) -> BatchSource:
    path = Path(path_str)
    return StoreSource(path) if path.is_dir() else load_npy(path)


def _setup_logging(log_file: Path | None) -> None:
    logger = logging.getLogger("saeprobe")
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in list(logger.handlers):
        if getattr(handler, "_saeprobe_cli", False):
            logger.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._saeprobe_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def cmd_train(args: argparse.Namespace, callback: StepCallback | None = None) -> int:
    sae_cfg = _sae_config(args)
    train_cfg = _train_config(args)
    if not 0 <= args.holdout < 1:
        raise ConfigError(f"--holdout: expected a fraction in [0, 1), got {args.holdout}")
    out = Path(args.out)
    source, held = _open_training(args)
    _setup_logging(out / "train.log")
    if args.threads:
        torch.set_num_threads(args.threads)
    log.info("train %s -> %s", sae_cfg, out)
    train_sweep(
        source,
        [sae_cfg],
        train_cfg,
        [out],
        device=args.device,
        seed=args.seed,
        eval_source=held,
        callback=callback,
        progress=not args.no_progress,
        export_saelens=args.export_saelens,
    )
    metrics_path = out / io.METRICS
    if metrics_path.is_file():
        print(json.dumps(io.read_json(metrics_path), sort_keys=True))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    sae = io.load_sae(args.sae, device=args.device)
    source = _open_eval(args.activations)
    if source.dim != sae.d_in:
        raise SourceError(
            f"{args.activations}: activations have dim {source.dim}, "
            f"but the SAE in {args.sae} expects {sae.d_in}"
        )
    metrics = evaluate(sae, source.sequential(args.batch_size))
    print(json.dumps(metrics, sort_keys=True))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    sae = io.load_sae(args.sae)
    io.export_saelens(sae, args.out)
    print(json.dumps({"saelens_dir": str(args.out)}))
    return 0


def main(argv: Sequence[str] | None = None, callback: StepCallback | None = None) -> int:
    """Entry point; returns the exit status (2 with a one-line message for bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args, callback)
        if args.command == "eval":
            return cmd_eval(args)
        return cmd_export(args)
    except (ConfigError, SourceError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
