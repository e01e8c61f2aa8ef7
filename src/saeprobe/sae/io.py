"""Saving, loading and exporting SAEs; training checkpoints. safetensors + JSON, never pickle.

SAE directory (`save_sae` / `load_sae`):
  sae.safetensors   W_enc (d_in, width), b_enc (width,), W_dec (width, d_in), b_dec (d_in,),
                    input_scale (scalar, 1 after folding) and the architecture's extra tensors
                    (batchtopk: threshold; jumprelu: log_threshold)
  cfg.json          format, arch, d_in, width, k, sae (SAEConfig), train (TrainConfig), seed,
                    trained_input_scale, activation_spec (store metadata), steps, versions
SAELens export (`export_saelens`, SAELens 6.x `SAE.load_from_disk`):
  cfg.json + sae_weights.safetensors with W_enc, b_enc, W_dec, b_dec (+ threshold for
  jumprelu); relu -> "standard", topk -> "topk", batchtopk / jumprelu / matryoshka-batchtopk ->
  "jumprelu", matryoshka-topk -> "topk".
Checkpoints (`{dir}/checkpoint/`, a `saeprobe.training` checkpoint set with one part, "sae":
`step_XXXXXXXXX.sae.safetensors` + `step_XXXXXXXXX.json`): model tensors, Adam state and trainer
buffers; the JSON (written last) holds the step, epoch, position and fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from saeprobe import training
from saeprobe.io import atomic_save_tensors, atomic_write_json
from saeprobe.sae.config import SAEConfig
from saeprobe.sae.models import SAE, build_sae

FORMAT = "saeprobe.sae/1"
WEIGHTS = "sae.safetensors"
CFG = "cfg.json"
METRICS = "metrics.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_PART = "sae"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_VERSION = "6.54.0"


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: file not found") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def save_sae(sae: SAE, out_dir: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write `sae.safetensors` and `cfg.json` into out_dir (atomic renames); returns out_dir.

    info: extra cfg.json fields (train config, seed, activation spec, ...).
    """
    out = Path(out_dir)
    cfg: dict[str, Any] = {
        "format": FORMAT,
        "arch": sae.cfg.arch,
        "d_in": sae.d_in,
        "width": sae.width,
        "k": sae.cfg.k,
        "sae": sae.cfg.to_dict(),
        "input_scale": float(sae.input_scale),
        "torch_version": torch.__version__,
    }
    if info:
        cfg.update(info)
    atomic_save_tensors(out / WEIGHTS, dict(sae.state_dict()), {"format": FORMAT})
    atomic_write_json(out / CFG, cfg)
    return out


def load_sae(sae_dir: str | Path, device: str | torch.device = "cpu") -> SAE:
    """The SAE saved in sae_dir (by `save_sae`), in eval mode on `device`."""
    path = Path(sae_dir)
    cfg = read_json(path / CFG)
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{path / CFG}: expected format {FORMAT!r}, got {cfg.get('format')!r}")
    try:
        sae_cfg = SAEConfig.from_dict(cfg["sae"])
        d_in = int(cfg["d_in"])
    except KeyError as err:
        raise ValueError(f"{path / CFG}: missing key {err}") from err
    weights = path / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: file not found")
    sae = build_sae(sae_cfg, d_in)
    state = load_file(str(weights))
    try:
        sae.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights}: tensors do not match cfg.json ({err})") from err
    return sae.to(device).eval()


def saelens_cfg(sae: SAE, metadata: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(architecture, SAELens 6.x inference cfg dict) for an SAE with input_scale == 1."""
    cfg = sae.cfg
    if cfg.arch == "relu":
        arch = "standard"
    elif cfg.arch == "topk" or (cfg.arch == "matryoshka" and cfg.matryoshka_base == "topk"):
        arch = "topk"
    else:
        arch = "jumprelu"
    out: dict[str, Any] = {
        "architecture": arch,
        "d_in": sae.d_in,
        "d_sae": sae.width,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAELENS_VERSION, **(metadata or {})},
    }
    if arch == "topk":
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = False
    return arch, out


@torch.no_grad()
def export_saelens(sae: SAE, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write an SAELens 6.x directory (cfg.json + sae_weights.safetensors) for `sae`.

    The input scale is folded in (on a copy), so the exported SAE takes raw activations.
    """
    out = Path(out_dir)
    scale = float(sae.input_scale)
    b_enc = sae.b_enc.detach().cpu() / scale
    b_dec = sae.b_dec.detach().cpu() / scale
    tensors = {
        "W_enc": sae.W_enc.detach().cpu().clone(),
        "b_enc": b_enc,
        "W_dec": sae.W_dec.detach().cpu().clone(),
        "b_dec": b_dec,
    }
    arch, cfg = saelens_cfg(sae, metadata)
    if arch == "jumprelu":
        threshold = sae.inference_threshold()
        assert threshold is not None
        tensors["threshold"] = threshold.detach().cpu() / scale
    atomic_save_tensors(out / SAELENS_WEIGHTS, tensors, {"format": "sae_lens"})
    atomic_write_json(out / CFG, cfg)
    return out


# -- checkpoints ------------------------------------------------------------------------------


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR


def list_checkpoints(out_dir: str | Path) -> list[int]:
    """Steps of the complete checkpoints in out_dir (json and tensors present), ascending."""
    return training.checkpoint_steps(checkpoint_dir(out_dir))


def save_checkpoint(
    out_dir: str | Path, step: int, tensors: dict[str, Tensor], state: dict[str, Any], keep: int
) -> None:
    """Write checkpoint `step` (tensors, then the JSON that marks it complete); prune old ones."""
    training.save_checkpoint(checkpoint_dir(out_dir), step, {CHECKPOINT_PART: tensors}, state, keep)


def load_checkpoint(out_dir: str | Path, step: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    ckpt = training.load_checkpoint(checkpoint_dir(out_dir), step)
    return ckpt.tensors[CHECKPOINT_PART], ckpt.state
