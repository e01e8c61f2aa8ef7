"""Sparse autoencoders: architectures, trainer, metrics, io, CLI (`python -m saeprobe.sae`).

Shapes: `encode(x: (batch, d_in)) -> codes (batch, width)`, `decode(codes) -> (batch, d_in)`,
`forward(x) -> SAEOutput(x_hat, codes, losses)`; saved SAEs take and return raw activations.
"""

from saeprobe.sae.config import SAEConfig, TrainConfig
from saeprobe.sae.io import export_saelens, load_sae, save_sae
from saeprobe.sae.metrics import downstream_recovered, evaluate, nmse, reconstruct
from saeprobe.sae.models import SAE, SAEOutput, build_sae
from saeprobe.sae.sources import ArraySource, StoreSource, as_source, load_npy
from saeprobe.sae.trainer import train_sae, train_sweep

__all__ = [
    "SAE",
    "ArraySource",
    "SAEConfig",
    "SAEOutput",
    "StoreSource",
    "TrainConfig",
    "as_source",
    "build_sae",
    "downstream_recovered",
    "evaluate",
    "export_saelens",
    "load_npy",
    "load_sae",
    "nmse",
    "reconstruct",
    "save_sae",
    "train_sae",
    "train_sweep",
]
