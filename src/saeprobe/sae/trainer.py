"""Training a sweep of SAEs from one stream of activation batches.

`train_sweep` reads each batch once and steps every SAE of the sweep on it. Inputs are scaled
to unit mean squared norm (one factor, estimated on a sample, shared by the sweep); decoder
biases start at the sample's geometric median (or mean); decoder rows stay unit-norm (gradient
projection, then renormalisation after each Adam step); dead latents (no activation over the
last `dead_after_tokens` inputs) are trained by AuxK. Parameters and Adam state are float32.

Checkpoints: every `checkpoint_every` steps each SAE directory gets `checkpoint/step_N.*` (model,
Adam state, firing counters, and the data position). The batch order is a pure function of
(seed, epoch), so a rerun resumes from the newest checkpoint that every SAE of the sweep has,
skips exactly the consumed batches and, on CPU, ends with the same weights as an uninterrupted
run. Once done, each directory holds `sae.safetensors`, `cfg.json` (and `metrics.json` when
held-out activations are given); the checkpoints are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saeprobe import __version__
from saeprobe.device import pick_device
from saeprobe.io import atomic_write_json
from saeprobe.sae import io
from saeprobe.sae.config import K_ARCHITECTURES, ConfigError, SAEConfig, TrainConfig
from saeprobe.sae.metrics import evaluate
from saeprobe.sae.models import SAE, StepContext, build_sae
from saeprobe.sae.sources import BatchSource, SourceError, as_source

log = logging.getLogger("saeprobe.sae")

StepCallback = Callable[[int, Sequence[SAE]], None]


def geometric_median(x: Tensor, iters: int = 200, tol: float = 1e-7) -> Tensor:
    """Weiszfeld iterations in float64. x: (n, d) -> (d,)."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        dist = (x - y).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        y_new = (w[:, None] * x).sum(0) / w.sum()
        shift = float((y_new - y).norm())
        y = y_new
        if shift <= tol * max(float(y.norm()), 1e-12):
            break
    return y


@dataclass
class InitStats:
    """Statistics of a data sample: input_scale (scalar) and, in scaled units, the sample's
    mean and geometric median (d,)."""

    input_scale: float
    mean: Tensor
    median: Tensor

    def b_dec(self, how: str, d: int) -> Tensor:
        if how == "geometric_median":
            return self.median.float()
        if how == "mean":
            return self.mean.float()
        return torch.zeros(d)


def init_statistics(source: BatchSource, batch_size: int, seed: int, n: int) -> InitStats:
    """Scale and decoder-bias statistics from the first ~n rows of epoch 0's batch order."""
    rows: list[Tensor] = []
    count = 0
    for batch in source.batches(batch_size, epoch=0, seed=seed):
        rows.append(batch.double())
        count += batch.shape[0]
        if count >= n:
            break
    if not rows:
        raise SourceError("no training batches: the source has fewer rows than one batch")
    sample = torch.cat(rows)[:n]
    mean_sq = float(sample.pow(2).sum(1).mean())
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise SourceError(f"activations have mean squared norm {mean_sq}; cannot scale them")
    scale = 1.0 / math.sqrt(mean_sq)
    scaled = sample * scale
    return InitStats(input_scale=scale, mean=scaled.mean(0), median=geometric_median(scaled))


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_steps, constant, linear decay to 0 over decay_fraction."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    decay_steps = int(total * cfg.decay_fraction)
    start = total - decay_steps
    if decay_steps > 0 and step >= start:
        return warm * max(0.0, (total - step) / decay_steps)
    return warm


def sparsity_warmup(step: int, total: int, cfg: TrainConfig) -> float:
    n = int(total * cfg.l1_warmup_fraction)
    return min(1.0, (step + 1) / n) if n > 0 else 1.0


_TRAIN_KEYS_NOT_IN_FINGERPRINT = ("checkpoint_every", "keep_checkpoints", "log_every")


def fingerprint(
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    seed: int,
    n_rows: int,
    dim: int,
    data_key: str | None = None,
) -> str:
    """Hash of everything that determines the trained weights; `data_key` stands for the
    content of the activations (see `train_sweep`)."""
    train = {
        k: v for k, v in train_cfg.to_dict().items() if k not in _TRAIN_KEYS_NOT_IN_FINGERPRINT
    }
    key = {"sae": sae_cfg.to_dict(), "train": train, "seed": seed, "rows": n_rows, "dim": dim}
    if data_key is not None:
        key["data"] = data_key
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Member:
    """One SAE of a sweep with its optimizer and firing counters."""

    def __init__(
        self,
        sae_cfg: SAEConfig,
        d_in: int,
        train_cfg: TrainConfig,
        out_dir: Path,
        device: torch.device,
        fp: str,
    ) -> None:
        self.cfg = sae_cfg
        self.out_dir = out_dir
        self.fingerprint = fp
        self.sae = build_sae(sae_cfg, d_in)
        self.base_lr = sae_cfg.lr if sae_cfg.lr is not None else train_cfg.lr
        self.since_fired = torch.zeros(sae_cfg.width, dtype=torch.long)
        self.device = device
        self.last: dict[str, float] = {}
        self.opt: torch.optim.Adam | None = None
        self.fused = False
        self.train_cfg = train_cfg

    def start(self) -> None:
        self.sae.to(self.device).train()
        self.since_fired = self.since_fired.to(self.device)
        # the fused kernel is ~3x faster than the per-tensor loop on CPU; keeps all its state,
        # `step` included, on the parameters' device
        self.fused = self.device.type in ("cpu", "cuda")
        self.opt = torch.optim.Adam(
            self.sae.parameters(),
            lr=self.base_lr,
            betas=self.train_cfg.adam_betas,
            eps=self.train_cfg.adam_eps,
            fused=self.fused,
        )

    def dead_mask(self) -> Tensor:
        return self.since_fired >= self.train_cfg.dead_after_tokens

    def step(self, x_s: Tensor, step: int, total: int, ctx: StepContext, autocast: Any) -> Any:
        assert self.opt is not None
        tc = self.train_cfg
        for group in self.opt.param_groups:
            group["lr"] = self.base_lr * lr_factor(step, total, tc)
        ctx.sparsity_scale = sparsity_warmup(step, total, tc) if self.cfg.arch == "relu" else 1.0
        ctx.dead = self.dead_mask() if self.cfg.arch in K_ARCHITECTURES else None
        with autocast():
            out = self.sae.training_losses(x_s, ctx)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.sae.project_decoder_grad()
        if tc.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), tc.max_grad_norm)
        self.opt.step()
        self.sae.normalize_decoder()
        self.since_fired += x_s.shape[0]
        self.since_fired[out.fired] = 0
        return out

    # -- checkpoint tensors -------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        assert self.opt is not None
        tensors = {f"model.{k}": v for k, v in self.sae.state_dict().items()}
        for name, param in self.sae.named_parameters():
            for key, value in self.opt.state.get(param, {}).items():
                if isinstance(value, Tensor):
                    tensors[f"optim.{name}.{key}"] = value
                else:
                    tensors[f"optim.{name}.{key}"] = torch.tensor(float(value))
        tensors["train.since_fired"] = self.since_fired
        return tensors

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        assert self.opt is not None
        model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        self.sae.load_state_dict(model, strict=True)
        for name, param in self.sae.named_parameters():
            prefix = f"optim.{name}."
            state = {
                k[len(prefix) :]: v.to(
                    self.device if self.fused or k[len(prefix) :] != "step" else "cpu"
                )
                for k, v in tensors.items()
                if k.startswith(prefix)
            }
            if state:
                self.opt.state[param] = state
        self.since_fired = tensors["train.since_fired"].to(self.device)


def _common_checkpoint(members: Sequence[_Member]) -> int | None:
    common: set[int] | None = None
    for m in members:
        steps = set(io.list_checkpoints(m.out_dir))
        common = steps if common is None else common & steps
    if not common:
        return None
    return max(common)


def _is_complete(member: _Member) -> bool:
    cfg_path = member.out_dir / io.CFG
    if not (cfg_path.is_file() and (member.out_dir / io.WEIGHTS).is_file()):
        return False
    if io.list_checkpoints(member.out_dir):
        return False
    try:
        return io.read_json(cfg_path).get("fingerprint") == member.fingerprint
    except ValueError:
        return False


def train_sweep(
    source: Any,
    sae_cfgs: Sequence[SAEConfig],
    train_cfg: TrainConfig,
    out_dirs: Sequence[str | Path],
    device: str | torch.device = "auto",
    seed: int = 0,
    eval_source: Any = None,
    activation_spec: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    progress: bool = True,
    export_saelens: bool = False,
    eval_batch_size: int = 1024,
    data_key: str | None = None,
) -> list[SAE]:
    """Train one SAE per config from a single pass over `source`; returns the trained SAEs.

    source: .npy path, store directory, array, or BatchSource of (batch, d) float activations;
    sae_cfgs / out_dirs: one config and one output directory per SAE; train_cfg: shared
    schedule; seed: data order and initialisation (each SAE is initialised from `seed` alone, so
    it ends as if trained by itself); eval_source: held-out activations for `metrics.json`;
    activation_spec: recorded in cfg.json (defaults to the source's description, e.g. the store
    metadata); callback(step, saes) runs after every step (after checkpointing; raising from it
    stops training, as a kill would); export_saelens also
    writes an SAELens directory to `{out_dir}/saelens`. data_key: a digest of the content of
    `source` (and `eval_source`); finished SAEs and checkpoints are reused only when it matches,
    so a resume never continues on activations computed from other inputs.
    """
    if len(sae_cfgs) != len(out_dirs):
        raise ConfigError(f"got {len(sae_cfgs)} SAE configs but {len(out_dirs)} output dirs")
    if not sae_cfgs:
        raise ConfigError("no SAE configs given")
    dirs = [Path(d) for d in out_dirs]
    if len(set(dirs)) != len(dirs):
        raise ConfigError("output directories of a sweep must be distinct")
    src = as_source(source)
    dev = device if isinstance(device, torch.device) else pick_device(str(device))
    d_in, n_rows = src.dim, len(src)
    bs = train_cfg.batch_size
    steps_per_epoch = n_rows // bs
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size ({bs}) exceeds the number of training rows ({n_rows})")
    total = steps_per_epoch * train_cfg.epochs
    members = [
        _Member(c, d_in, train_cfg, d, dev, fingerprint(c, train_cfg, seed, n_rows, d_in, data_key))
        for c, d in zip(sae_cfgs, dirs, strict=True)
    ]
    if all(_is_complete(m) for m in members):
        log.info("all %d SAE(s) already trained in %s; nothing to do", len(members), dirs)
        return [io.load_sae(m.out_dir, dev) for m in members]

    for m in members:
        m.start()
    start_step = _common_checkpoint(members)
    if start_step is not None:
        states = [io.load_checkpoint(m.out_dir, start_step) for m in members]
        stale = [m for m, (_, state) in zip(members, states, strict=True) if
                 state.get("fingerprint") != m.fingerprint]  # fmt: skip
        if stale:
            log.warning(
                "discarding the checkpoints at step %d: computed on other activations or "
                "settings (%s); training from scratch",
                start_step,
                ", ".join(str(io.checkpoint_dir(m.out_dir)) for m in stale),
            )
            for m in members:
                shutil.rmtree(io.checkpoint_dir(m.out_dir), ignore_errors=True)
            start_step = None
    if start_step is not None:
        for m, (tensors, _) in zip(members, states, strict=True):
            m.load_state_tensors(tensors)
        log.info(
            "resuming from checkpoint at step %d of %d (%s)",
            start_step,
            total,
            ", ".join(str(io.checkpoint_dir(m.out_dir)) for m in members),
        )
    else:
        start_step = 0
        for m in members:
            if io.list_checkpoints(m.out_dir):
                log.warning("%s: checkpoints not shared by the sweep; starting over", m.out_dir)
                shutil.rmtree(io.checkpoint_dir(m.out_dir), ignore_errors=True)
        stats = init_statistics(src, bs, seed, train_cfg.init_sample_size)
        log.info("input scale %.6g (unit mean squared norm)", stats.input_scale)
        for m in members:
            with torch.no_grad():
                m.sae.initialize(seed, stats.b_dec(m.cfg.b_dec_init, d_in), stats.input_scale)
    scale = float(members[0].sae.input_scale)

    ctx = StepContext(
        chunk=train_cfg.encode_chunk if dev.type == "cpu" else 0,
        matmul_dtype=torch.bfloat16 if train_cfg.dtype == "bfloat16" else None,
    )
    use_amp = train_cfg.dtype == "bfloat16"

    def autocast() -> Any:
        if use_amp:
            return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    spec = activation_spec if activation_spec is not None else src.describe()
    bar = tqdm(
        total=total,
        initial=start_step,
        desc=f"train {len(members)} SAE" + ("s" if len(members) > 1 else ""),
        file=sys.stderr,
        disable=not progress,
        mininterval=1.0,
        dynamic_ncols=True,
    )
    step = start_step
    saes = [m.sae for m in members]
    try:
        for epoch in range(start_step // steps_per_epoch, train_cfg.epochs):
            first = step - epoch * steps_per_epoch
            for batch in src.batches(bs, epoch, seed, start=first):
                x_s = batch.to(dev, torch.float32, non_blocking=True) * scale
                outs = [m.step(x_s, step, total, ctx, autocast) for m in members]
                step += 1
                bar.update(1)
                if step % train_cfg.log_every == 0 or step == total:
                    _show(bar, members, outs)
                if train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0:
                    if step < total:
                        _checkpoint(members, step, epoch, steps_per_epoch, seed, train_cfg)
                if callback is not None:
                    callback(step, saes)
    finally:
        bar.close()
    if step != total:
        raise SourceError(
            f"the source yielded {step} batches, expected {total}; it changed during training"
        )
    held = as_source(eval_source) if eval_source is not None else None
    info = {"train": train_cfg.to_dict(), "seed": seed, "steps": total, "n_train_rows": n_rows}
    return [_finish(m, info, spec, held, export_saelens, eval_batch_size) for m in members]


def _show(bar: Any, members: Sequence[_Member], outs: Sequence[Any]) -> None:
    losses = [float(o.loss.detach()) for o in outs]
    l0s = [float(o.l0) for o in outs]
    dead = [float(m.dead_mask().float().mean()) for m in members]
    n = len(members)
    bar.set_postfix(
        loss=f"{sum(losses) / n:.4g}", l0=f"{sum(l0s) / n:.1f}", dead=f"{sum(dead) / n:.3f}"
    )


def _checkpoint(
    members: Sequence[_Member],
    step: int,
    epoch: int,
    steps_per_epoch: int,
    seed: int,
    train_cfg: TrainConfig,
) -> None:
    for m in members:
        state = {
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": step - epoch * steps_per_epoch,
            "data_order": {"seed": seed, "rule": "permutation per (seed, epoch)"},
            "fingerprint": m.fingerprint,
            "sae": m.cfg.to_dict(),
            "train": train_cfg.to_dict(),
            "saeprobe_version": __version__,
        }
        io.save_checkpoint(m.out_dir, step, m.state_tensors(), state, train_cfg.keep_checkpoints)


def _finish(
    m: _Member,
    base_info: dict[str, Any],
    spec: dict[str, Any],
    held: BatchSource | None,
    export_saelens: bool,
    eval_batch_size: int,
) -> SAE:
    sae = m.sae
    sae.eval()
    trained_scale = sae.fold_input_scale()
    info = {
        **base_info,
        "trained_input_scale": trained_scale,
        "fingerprint": m.fingerprint,
        "activation_spec": spec,
        "saeprobe_version": __version__,
    }
    if held is not None:
        metrics = evaluate(sae, held.sequential(eval_batch_size))
        atomic_write_json(m.out_dir / io.METRICS, {**metrics, "eval_rows": len(held)})
        log.info(
            "%s: held-out nmse %.4f, l0 %.1f, dead %.3f",
            m.out_dir,
            metrics["nmse"],
            metrics["l0"],
            metrics["dead_frac"],
        )
    io.save_sae(sae, m.out_dir, info)
    if export_saelens:
        io.export_saelens(sae, m.out_dir / "saelens", metadata={"saeprobe_arch": m.cfg.arch})
    shutil.rmtree(io.checkpoint_dir(m.out_dir), ignore_errors=True)
    return sae


def train_sae(
    source: Any,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    **kwargs: Any,
) -> SAE:
    """Train a single SAE; see `train_sweep` for the arguments."""
    return train_sweep(source, [sae_cfg], train_cfg, [out_dir], **kwargs)[0]
