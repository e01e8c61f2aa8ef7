"""An SAE's codes on an activation-store site, in chunks of whole examples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saeprobe.activations.store import ActivationStore
from saeprobe.atlas.stats import CodeChunk
from saeprobe.sae.io import read_json


@dataclass
class EncodedSite:
    """An SAE (`load_sae`) and the store site it reads; rows are divided by the modality scales
    the SAE recorded in training (as the tasks do)."""

    sae_dir: Path
    store: ActivationStore
    chunk_codes: int = 1 << 23  # rows x width per chunk: 32 MB of float32 codes

    def __post_init__(self) -> None:
        from saeprobe.sae.io import load_sae
        from saeprobe.sae.site import MODALITY_SCALE

        self.sae = load_sae(self.sae_dir, "cpu")
        self.divisors = None
        scale_file = Path(self.sae_dir) / MODALITY_SCALE
        if scale_file.is_file() and read_json(scale_file).get("normalize"):
            self.divisors = self.store.row_divisors(read_json(scale_file))
        self.example = np.asarray(self.store.example_index())
        if len(self.example) and np.any(np.diff(self.example) < 0):
            raise ValueError(
                f"{self.store.path}: rows are not grouped by example (example.npy decreases); "
                "the atlas expects an example's rows to be contiguous"
            )

    @property
    def width(self) -> int:
        return int(self.sae.width)

    def decoder(self) -> np.ndarray:
        """(width, d_in) float32 decoder directions."""
        return self.sae.W_dec.detach().float().cpu().numpy()

    def _codes(self, start: int, stop: int) -> np.ndarray:
        import torch

        x = self.store.read_rows(start, stop)
        if self.divisors is not None:
            x = x / self.divisors[start:stop, None]
        with torch.no_grad():
            return self.sae.encode(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()

    def chunks(self) -> Iterator[tuple[int, CodeChunk]]:
        """(first row, CodeChunk) of about `chunk_codes` codes each, cut between examples."""
        n = len(self.example)
        rows = max(1, self.chunk_codes // self.width)
        start = 0
        while start < n:
            stop = min(n, start + rows)
            if stop < n:  # move the cut back to the start of the example it splits
                first = np.searchsorted(self.example, self.example[stop], side="left")
                stop = (
                    first
                    if first > start
                    else np.searchsorted(self.example, self.example[stop], side="right")
                )
            yield start, CodeChunk(self._codes(start, stop), self.example[start:stop])
            start = int(stop)
