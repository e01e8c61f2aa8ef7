"""Activation stores: sharded `.npy` files per site, a resumable writer and a shuffled reader."""

from saeprobe.activations.extract import describe_sites, extract, model_sites, store_dtype
from saeprobe.activations.store import ActivationStore

__all__ = ["ActivationStore", "describe_sites", "extract", "model_sites", "store_dtype"]
