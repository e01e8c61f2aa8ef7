"""Activation stores: sharded `.npy` files per site, a resumable writer and a shuffled reader."""

from saeprobe.activations.extract import extract, store_dtype
from saeprobe.activations.store import ActivationStore

__all__ = ["ActivationStore", "extract", "store_dtype"]
