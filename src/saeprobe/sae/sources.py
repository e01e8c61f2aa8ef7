"""Batch sources for SAE training and evaluation.

A source yields float32 tensors (batch, d). Training asks for the batches of one epoch with
`batches(batch_size, epoch, seed, start)`; their order is a pure function of (seed, epoch), so a
resumed run skips exactly the `start` batches it has already consumed. Incomplete last batches
are dropped in training; `sequential` (evaluation) yields every row once, in order.

* `ArraySource`: a 2-D numpy array or a plain `.npy` file (memory-mapped), optionally a subset
  of its rows; a fresh permutation per epoch.
* `StoreSource`: an activation-store site directory, read through
  `saeprobe.activations.ActivationStore(path).iter_batches(batch_size, shuffle=True, seed=...)`.
* `as_source(obj)` turns a path, array, tensor or store into a source.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor


class SourceError(ValueError):
    """Unusable activations; the message names the file or argument."""


@runtime_checkable
class BatchSource(Protocol):
    """What the trainer needs from a stream of activations."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, epoch: int, seed: int, start: int = 0
    ) -> Iterator[Tensor]: ...

    def sequential(self, batch_size: int) -> Iterator[Tensor]: ...

    def describe(self) -> dict[str, Any]: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of one epoch."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


class ArraySource:
    """Rows of a 2-D float array (in memory or memory-mapped .npy), shuffled per epoch.

    array: (n, d) float array; rows: optional int64 subset of row indices; name: for messages.
    """

    def __init__(
        self, array: np.ndarray, rows: np.ndarray | None = None, name: str = "array"
    ) -> None:
        if array.ndim != 2:
            raise SourceError(
                f"{name}: expected a 2-D array (rows, dim), got shape {tuple(array.shape)}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise SourceError(f"{name}: expected a float array, got dtype {array.dtype}")
        self.array = array
        self.name = name
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if (
            self.rows is not None
            and self.rows.size
            and (self.rows.min() < 0 or self.rows.max() >= array.shape[0])
        ):
            raise SourceError(f"{name}: row subset out of range for {array.shape[0]} rows")

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def __len__(self) -> int:
        return int(self.array.shape[0] if self.rows is None else self.rows.size)

    def _take(self, index: np.ndarray) -> Tensor:
        rows = index if self.rows is None else self.rows[index]
        rows = np.sort(rows)
        return torch.from_numpy(np.ascontiguousarray(self.array[rows], dtype=np.float32))

    def batches(self, batch_size: int, epoch: int, seed: int, start: int = 0) -> Iterator[Tensor]:
        """Batches (batch_size, d) of one epoch in a seeded random order, from batch `start`."""
        n = len(self)
        order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(n)
        for i in range(start, n // batch_size):
            yield self._take(order[i * batch_size : (i + 1) * batch_size])

    def sequential(self, batch_size: int) -> Iterator[Tensor]:
        """Every row once, in order, in batches of at most batch_size."""
        n = len(self)
        for i in range(0, n, batch_size):
            index = np.arange(i, min(i + batch_size, n))
            rows = index if self.rows is None else self.rows[index]
            yield torch.from_numpy(np.ascontiguousarray(self.array[rows], dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "rows": len(self), "dim": self.dim}

    def check_finite(self, block: int = 65_536) -> None:
        """Raise SourceError naming the file and first bad row if any value is NaN/inf."""
        n = len(self)
        for i in range(0, n, block):
            index = np.arange(i, min(i + block, n))
            rows = index if self.rows is None else self.rows[index]
            chunk = np.asarray(self.array[rows])
            finite = np.isfinite(chunk).all(axis=1)
            if not finite.all():
                bad = int(rows[int(np.argmin(finite))])
                raise SourceError(f"{self.name}: non-finite values (NaN or inf) in row {bad}")


def load_npy(path: str | Path, rows: np.ndarray | None = None, check: bool = True) -> ArraySource:
    """ArraySource over a plain 2-D float `.npy` file, memory-mapped.

    Raises SourceError naming the file when it is missing, not a 2-D float array, or (check)
    holds non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: activations file not found")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise SourceError(f"{path}: not a readable .npy array ({err})") from err
    source = ArraySource(array, rows, name=str(path))
    if len(source) == 0:
        raise SourceError(f"{path}: the array has no rows")
    if check:
        source.check_finite()
    return source


class StoreSource:
    """Batches from an activation-store site (`saeprobe.activations.ActivationStore`).

    divisors: optional (rows,) float32 per-row divisor in store order (e.g. each row's
    modality scale, `ActivationStore.row_divisors`), applied to every batch.
    """

    def __init__(self, store: Any, divisors: np.ndarray | None = None) -> None:
        if isinstance(store, (str, Path)):
            from saeprobe.activations import ActivationStore

            store = ActivationStore(store)
        self.store = store
        self.divisors = None if divisors is None else torch.from_numpy(np.asarray(divisors))
        if self.divisors is not None and len(self.divisors) != len(store):
            raise SourceError(f"{store}: {len(self.divisors)} divisors for {len(store)} rows")

    @property
    def dim(self) -> int:
        return int(self.store.dim)

    def __len__(self) -> int:
        return len(self.store)

    def _scaled(self, stream: Iterator) -> Iterator[Tensor]:
        for item in stream:
            if self.divisors is None:
                yield torch.as_tensor(item, dtype=torch.float32)
            else:
                batch, index = item
                yield torch.as_tensor(batch, dtype=torch.float32) / self.divisors[index, None]

    def batches(self, batch_size: int, epoch: int, seed: int, start: int = 0) -> Iterator[Tensor]:
        stream = self.store.iter_batches(
            batch_size,
            shuffle=True,
            seed=epoch_seed(seed, epoch),
            drop_last=True,
            return_index=self.divisors is not None,
        )
        yield from self._scaled(itertools.islice(stream, start, None))

    def sequential(self, batch_size: int) -> Iterator[Tensor]:
        stream = self.store.iter_batches(
            batch_size, shuffle=False, drop_last=False, return_index=self.divisors is not None
        )
        yield from self._scaled(stream)

    def describe(self) -> dict[str, Any]:
        return dict(getattr(self.store, "metadata", {}) or {})


def as_source(obj: Any) -> BatchSource:
    """A BatchSource from a .npy path, a store directory, an array/tensor or a source."""
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if path.is_dir():
            return StoreSource(path)
        return load_npy(path)
    if isinstance(obj, np.ndarray):
        return ArraySource(obj)
    if isinstance(obj, Tensor):
        return ArraySource(obj.detach().cpu().float().numpy(), name="tensor")
    if isinstance(obj, BatchSource):
        return obj
    if hasattr(obj, "iter_batches") and hasattr(obj, "dim"):
        return StoreSource(obj)
    raise SourceError(f"cannot read activations from {type(obj).__name__}")


def split_rows(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (train_rows, heldout_rows), both sorted."""
    if not 0 <= holdout_fraction < 1:
        raise SourceError(f"holdout fraction: expected in [0, 1), got {holdout_fraction}")
    order = np.random.default_rng([int(seed), 0, 1]).permutation(n)
    n_held = round(n * holdout_fraction)
    return np.sort(order[n_held:]), np.sort(order[:n_held])
