"""Device selection shared by every stage."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """Resolve a config device name: "auto" => cuda if available else cpu; else torch.device(name).

    Raises ValueError naming the value when a CUDA device is asked for and none is present.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} was requested but CUDA is not available")
    return device
