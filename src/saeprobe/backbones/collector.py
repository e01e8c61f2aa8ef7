"""The one interface every model family extracts through.

A `Collector` wraps a loaded model (a vision ViT, a diffusion pipeline's text encoder, a
multimodal LLM). It opens a dataset spec as an `ExampleSet` (images, prompts, or image +
caption pairs), and turns one batch of examples into activation rows per site, each row
described by its example index, token position, token id and modality. The extraction loop
(`saeprobe.activations.extract`) and the store format are the same for every family.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch


@dataclass
class SiteRows:
    """One site's activations for one batch of examples.

    acts: (rows, d). example: (rows,) int64 dataset index of each row's example.
    position: (rows,) int64 token position in the example's sequence, or None for one row per
    example (CLS, pooled, mean). token_id: (rows,) int64 or None (no text tokens).
    modality: (rows,) int8 index into MODALITIES, or None (single modality).
    """

    acts: torch.Tensor
    example: np.ndarray
    position: np.ndarray | None = None
    token_id: np.ndarray | None = None
    modality: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.acts.shape[0]
        for name in ("example", "position", "token_id", "modality"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"SiteRows.{name}: {len(value)} entries for {n} rows")

    def columns(self) -> dict[str, np.ndarray]:
        """The row columns present, by store file stem."""
        out = {"example": np.asarray(self.example, dtype=np.int64)}
        if self.position is not None:
            out["position"] = np.asarray(self.position, dtype=np.int64)
        if self.token_id is not None:
            out["token_id"] = np.asarray(self.token_id, dtype=np.int64)
        if self.modality is not None:
            out["modality"] = np.asarray(self.modality, dtype=np.int8)
        return out


class ExampleBatch(Protocol):
    """What a dataset yields per range: the indices read and the examples that failed."""

    indices: np.ndarray
    skipped: list


class ExampleSet(Protocol):
    """An ordered dataset. `manifest` has one row per example with at least `index`."""

    name: str
    manifest: pd.DataFrame

    def __len__(self) -> int: ...

    def iter_batches(
        self,
        ranges: Sequence[tuple[int, int]],
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch: bool = True,
    ) -> Iterator[ExampleBatch]: ...


@dataclass
class ListBatch:
    """A batch of in-memory examples (prompts, or image + caption pairs)."""

    indices: np.ndarray
    items: list[Any]
    skipped: list = field(default_factory=list)


def list_batches(
    items: Sequence[Any], ranges: Sequence[tuple[int, int]]
) -> Generator[ListBatch, None, None]:
    """One ListBatch per [start, stop) range of an in-memory list (a generator: the extraction
    loop closes it when it stops early)."""
    for a, b in ranges:
        yield ListBatch(np.arange(a, b, dtype=np.int64), [items[i] for i in range(a, b)])


class Collector(ABC):
    """A loaded model that turns batches of examples into activation rows per site."""

    spec: dict
    device: torch.device

    @property
    def name(self) -> str:
        return str(self.spec.get("name", self.spec.get("source", "model")))

    @abstractmethod
    def sites(self) -> list[str]:
        """The site names this collector writes, checked against the model's depth."""

    @abstractmethod
    def open(self, dataset_spec: Mapping, seed: int) -> ExampleSet:
        """The dataset a config spec names, prepared for this model."""

    @abstractmethod
    def collect(self, batch: Any) -> dict[str, SiteRows]:
        """Activation rows per site for one batch from `open(...).iter_batches`."""

    @abstractmethod
    def max_rows_per_example(self, site: str) -> int:
        """An upper bound on a site's rows per example (sizes the shard files)."""

    def token_words(self, token_ids: Sequence[int]) -> list[str]:
        """The text of token ids (for the store's vocab.json); [] when there are no tokens."""
        return []

    def describe(self) -> dict:
        """What goes into the store's metadata about this model."""
        return {"spec": self.spec}

    def weights_key(self) -> str | None:
        """A digest of the model's local weight files (None for a model that comes from a hub by
        name only): a resumed extraction must see the same weights."""
        return local_files_key(self.spec.get("weights"), self.spec.get("name"))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".txt", ".model")


def local_files_key(*paths: str | None) -> str | None:
    """sha256 over the content of the weight and config files at `paths` (files, or folders
    searched recursively); None when none of them is on disk."""
    from saeprobe.training import file_digest

    files: list[Path] = []
    for path in filter(None, paths):
        p = Path(path)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{file_digest(f)}\n".encode())
    return h.hexdigest()
