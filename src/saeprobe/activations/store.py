"""Reading an activation store: one site's shards, memory-mapped, with a shuffled batch iterator.

The one store format of every model family. A dataset directory (`.../{model}/{dataset}/`)
holds `examples.csv` (one row per example: index, label or prompt or caption, ...),
`extraction.json`, and where they apply `vocab.json` (token id -> token text) and
`thumbnails.npy` (uint8 (n, 64, 64, 3), row i the thumbnail of examples.csv's row i: image +
caption pairs, and image folders extracted with thumbnails). Each site directory holds
`shard_*.npy` (rows, d), `metadata.json`, and one `.npy` per row column: `example` (int64
example index of each row), and where the site has them `position` (token position),
`token_id`, `modality` (int8 index into MODALITIES: image, text).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.config import THUMBNAIL_PX
from saeprobe.sites import MODALITIES

METADATA = "metadata.json"
EXAMPLES_CSV = "examples.csv"
VOCAB = "vocab.json"
THUMBNAILS = "thumbnails.npy"
COLUMNS = ("example", "position", "token_id", "modality")


class ActivationStore:
    """The activations of one site (`L{layer}_{tokens}` or `pooled`) of one model on one dataset.

    Rows are stored as 2-D shards (rows, dim); `example_index()` gives the dataset index of the
    example each row comes from, `rows()` every row column. Nothing is loaded until asked for,
    and then only by slices of memory-mapped shards.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / METADATA
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not an activation store: missing {METADATA} (expected a site "
                "directory written by saeprobe.activations.extract, e.g. "
                "<activations>/<model>/<dataset>/L11_cls)"
            )
        self.metadata: dict = json.loads(meta_path.read_text())
        self._shard_files = [self.path / s["file"] for s in self.metadata["shards"]]
        self._shard_rows = np.array([s["rows"] for s in self.metadata["shards"]], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._shard_rows)])
        self._shards: list[np.ndarray | None] = [None] * len(self._shard_files)

    # -- description -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.metadata["dtype"])

    @property
    def site(self) -> str:
        return str(self.metadata["site"])

    @property
    def layer(self) -> int | None:
        return self.metadata["layer"]

    @property
    def mean(self) -> np.ndarray:
        """(dim,) float64 per-dimension mean of the stored rows."""
        return np.asarray(self.metadata["mean"], dtype=np.float64)

    def __len__(self) -> int:
        return int(self.metadata["count"])

    def content_key(self) -> str:
        """A digest that changes with the stored activations: the sha256 of the site's
        metadata.json, which holds the per-dimension mean and the mean norm of every row (float64,
        accumulated while writing), the row count, and the model and dataset specs."""
        return hashlib.sha256((self.path / METADATA).read_bytes()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, rows={len(self)}, dim={self.dim})"

    # -- raw access --------------------------------------------------------------------
    def shard(self, i: int) -> np.ndarray:
        """Shard i as a read-only memory map, (rows_i, dim)."""
        if self._shards[i] is None:
            self._shards[i] = np.load(self._shard_files[i], mmap_mode="r")
        return self._shards[i]

    @property
    def num_shards(self) -> int:
        return len(self._shard_files)

    def read_rows(self, start: int, stop: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Rows [start, stop) in store order, as (stop - start, dim) `dtype`."""
        start, stop = max(0, start), min(len(self), stop)
        out = np.empty((max(0, stop - start), self.dim), dtype=dtype)
        pos = 0
        for i in range(self.num_shards):
            lo, hi = max(start, self._offsets[i]), min(stop, self._offsets[i + 1])
            if lo < hi:
                part = self.shard(i)[lo - self._offsets[i] : hi - self._offsets[i]]
                out[pos : pos + len(part)] = part
                pos += len(part)
        return out

    def take(
        self, rows: np.ndarray, dtype: np.dtype | type = np.float32, block: int = 65536
    ) -> np.ndarray:
        """The given rows (sorted ascending store positions), as (len(rows), dim) `dtype`.

        Reads only the shards and row ranges that hold them, `block` rows at a time, so a subset
        of a large store never costs the whole store's memory.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self) or np.any(np.diff(rows) < 0)):
            raise ValueError(f"{self.path}: take() needs sorted rows in [0, {len(self)})")
        out = np.empty((len(rows), self.dim), dtype=dtype)
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for i in np.unique(shard_of):
            where = np.flatnonzero(shard_of == i)
            local = rows[where] - self._offsets[i]
            for a in range(0, len(where), block):
                part = local[a : a + block]
                span = self.shard(i)[part[0] : part[-1] + 1]
                out[where[a : a + block]] = span[part - part[0]]
        return out

    def read_all(
        self, max_rows: int | None = None, dtype: np.dtype | type = np.float32
    ) -> np.ndarray:
        """The first `max_rows` rows (all by default), as (rows, dim) `dtype`."""
        n = len(self) if max_rows is None else min(len(self), max_rows)
        return self.read_rows(0, n, dtype)

    def example_index(self) -> np.ndarray:
        """(rows,) int64 dataset index of the example each row comes from (memory-mapped)."""
        return self.column("example")

    def column(self, name: str) -> np.ndarray:
        """(rows,) one row column (see COLUMNS), memory-mapped."""
        if name not in self.metadata["columns"]:
            raise KeyError(f"{self.path}: no row column {name!r} (has {self.metadata['columns']})")
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    def rows(self) -> pd.DataFrame:
        """One row per activation row: example, and where present position, token_id, word
        (the token's text; "" for image tokens) and modality (image or text)."""
        out = pd.DataFrame(
            {name: np.asarray(self.column(name)) for name in self.metadata["columns"]}
        )
        if "modality" in out:
            out["modality"] = np.asarray(MODALITIES)[out["modality"].to_numpy()]
        if "token_id" in out:
            vocab = self.vocab()
            words = out["token_id"].map(lambda t: vocab.get(int(t), ""))
            if "modality" in out:
                words = words.where(out["modality"] == "text", "")
            out["word"] = words
        return out

    def vocab(self) -> dict[int, str]:
        """{token id: token text} of the tokens in this dataset's rows."""
        path = self.path.parent / VOCAB
        if not path.is_file():
            return {}
        return {int(k): v for k, v in json.loads(path.read_text()).items()}

    def examples(self) -> pd.DataFrame:
        """The dataset's example table (index, label, ...) saved next to the store's sites."""
        path = self.path.parent / EXAMPLES_CSV
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; expected the table written by extract")
        return pd.read_csv(path, keep_default_na=False)

    def dataset_info(self) -> dict:
        """What the dataset said about itself at extraction (e.g. a concept -> attribute map)."""
        return json.loads((self.path.parent / "extraction.json").read_text()).get("dataset", {})

    def thumbnails(self) -> np.ndarray:
        """uint8 (n_examples, px, px, 3) thumbnails by examples.csv row (image + caption pairs,
        image folders extracted with `thumbnail_px`; grey for an unreadable image), memory-mapped.
        """
        return np.load(self.path.parent / THUMBNAILS, mmap_mode="r")

    def example_thumbnails(
        self, spec: Mapping, indices: Sequence[int], size: int = THUMBNAIL_PX
    ) -> list[np.ndarray] | None:
        """uint8 (px, px, 3) thumbnails of the dataset examples `indices`: from `thumbnails.npy`
        where extraction saved them (no file is opened), else the world's stored images or an
        image folder's files decoded again at `size` (grey for an unreadable file); None for a
        dataset without images (prompts). `spec` is the dataset's config entry."""
        if (self.path.parent / THUMBNAILS).is_file():
            examples = self.examples()
            position = pd.Series(np.arange(len(examples)), index=examples["index"].to_numpy())
            thumbs = self.thumbnails()
            return [np.asarray(thumbs[position[int(i)]]) for i in indices]
        examples = self.examples().set_index("index", drop=False)
        if spec.get("source") != "world" and "path" not in examples:
            return None
        from saeprobe.data.thumbnails import thumbnails

        paths = examples.loc[list(indices), "path"].tolist() if "path" in examples else []
        return thumbnails(spec, paths, list(indices), size)

    def modality_norms(self, block: int = 65536) -> dict[str, float]:
        """{modality: mean L2 norm of its rows} in float64 (the per-modality normalisers)."""
        modality = self.column("modality")
        sums, counts = np.zeros(len(MODALITIES)), np.zeros(len(MODALITIES))
        for a in range(0, len(self), block):
            norms = np.linalg.norm(self.read_rows(a, a + block, np.float64), axis=1)
            mod = np.asarray(modality[a : a + block])
            sums += np.bincount(mod, weights=norms, minlength=len(MODALITIES))
            counts += np.bincount(mod, minlength=len(MODALITIES))
        return {m: float(sums[i] / max(counts[i], 1)) for i, m in enumerate(MODALITIES)}

    def row_divisors(self, scales: dict[str, float]) -> np.ndarray:
        """(rows,) float32: each row's modality scale (1 where the store has no modality)."""
        if "modality" not in self.metadata["columns"]:
            return np.ones(len(self), np.float32)
        table = np.array([scales[m] for m in MODALITIES], dtype=np.float32)
        return table[np.asarray(self.column("modality"))]

    def example_labels(self) -> np.ndarray:
        """(n_dataset_examples,) label of every dataset example, by dataset index."""
        examples = self.examples()
        labels = np.empty(int(examples["index"].max()) + 1, dtype=object)
        labels[examples["index"].to_numpy()] = examples["label"].astype(str).to_numpy()
        return labels

    def labels(self) -> np.ndarray:
        """(rows,) label of the example each row comes from."""
        return self.example_labels()[np.asarray(self.example_index())]

    # -- iteration ---------------------------------------------------------------------
    def _chunks(self, chunk_rows: int) -> list[tuple[int, int, int]]:
        chunks = []
        for i, rows in enumerate(self._shard_rows):
            for a in range(0, int(rows), chunk_rows):
                chunks.append((i, a, min(int(rows), a + chunk_rows)))
        return chunks

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        chunk_rows: int = 4096,
        window_rows: int = 131072,
        return_index: bool = False,
    ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches: (batch, dim) float32 tensors, every row exactly once.

        With `shuffle`, contiguous chunks of `chunk_rows` rows are read in a seeded random order
        (across shards), gathered into a window of about `window_rows` rows and permuted there;
        rows left over after the last full batch of a window join the next window. Only one
        window is in memory at a time. With `return_index`, yields (x, row_index) where
        row_index: (batch,) int64 positions in store order.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        rng = np.random.default_rng(seed)
        chunks = self._chunks(chunk_rows)
        if shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        pending_x = np.empty((0, self.dim), dtype=self.dtype)
        pending_i = np.empty(0, dtype=np.int64)
        pos = 0
        while pos < len(chunks):
            parts_x, parts_i, rows = [pending_x], [pending_i], len(pending_x)
            while pos < len(chunks) and rows < window_rows:
                s, a, b = chunks[pos]
                parts_x.append(self.shard(s)[a:b])
                parts_i.append(np.arange(self._offsets[s] + a, self._offsets[s] + b))
                rows += b - a
                pos += 1
            x, idx = np.concatenate(parts_x), np.concatenate(parts_i)
            if shuffle:
                order = rng.permutation(len(x))
                x, idx = x[order], idx[order]
            n_full = len(x) // batch_size * batch_size
            for a in range(0, n_full, batch_size):
                batch = torch.from_numpy(x[a : a + batch_size].astype(np.float32, copy=False))
                if return_index:
                    yield batch, torch.from_numpy(idx[a : a + batch_size])
                else:
                    yield batch
            pending_x, pending_i = x[n_full:], idx[n_full:]
        if len(pending_x) and not drop_last:
            batch = torch.from_numpy(pending_x.astype(np.float32, copy=False))
            yield (batch, torch.from_numpy(pending_i)) if return_index else batch
