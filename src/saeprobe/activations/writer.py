"""Writing an activation store: shards filled in a partial directory, resumable, renamed at the end.

Layout while running (`{out}.partial/`, a sibling of the final directory):
  progress.json                 commit record: fingerprint + one entry per finished shard
  images_{s:05d}.npy            (n_ok,) int64 dataset indices of shard s's readable examples
  thumbnails_{s:05d}.npy        (n_ok, px * px * 3) uint8 their thumbnails, where asked for
  {site}/shard_{s:05d}.npy      (rows, dim) activations of shard s (temp name until complete)
  {site}/{column}_{s:05d}.npy   (rows,) row columns of shard s (example, position, ...)
  {site}/stats_{s:05d}.npy      (dim + 1,) float64 running [sum of rows, sum of row norms]
A shard counts as done only once progress.json lists it, so a killed run resumes at the first
shard it does not list and recomputes it from scratch.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from saeprobe.activations.store import COLUMNS, EXAMPLES_CSV, METADATA, THUMBNAILS, VOCAB
from saeprobe.io import atomic_save_npy, atomic_write_csv, atomic_write_text

log = logging.getLogger(__name__)

PROGRESS = "progress.json"
SUMMARY = "extraction.json"
FORMAT_VERSION = 2


def _json(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)


def canonical(obj: object) -> object:
    """A JSON round trip, so that fingerprints compare equal however they were built."""
    return json.loads(json.dumps(obj, sort_keys=True))


class SiteShard:
    """One site's shard being filled: a `.npy` file under a temp name, written with pwrite.

    The header announces `max_rows` rows (an upper bound; the file stays sparse); `close` trims
    it to the rows actually written and gives the file its final name.
    """

    def __init__(self, path: Path, max_rows: int, dim: int, dtype: np.dtype) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.dim, self.dtype, self.max_rows = dim, np.dtype(dtype), max_rows
        self.row_bytes = dim * self.dtype.itemsize
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (max_rows, dim),
        }
        with open(self.tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            self.data_offset = fh.tell()
        self.fd: int | None = os.open(self.tmp, os.O_WRONLY)
        self.rows = 0

    def write(self, offset: int, rows: np.ndarray) -> None:
        """rows: (n, dim) written at row `offset`."""
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        view = memoryview(data).cast("B")
        position = self.data_offset + offset * self.row_bytes
        while view:
            written = os.pwrite(self.fd, view, position)
            view, position = view[written:], position + written

    def abort(self) -> None:
        """Close the file of an unfinished shard (a rerun deletes the temp file)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self, rows: int) -> None:
        """Trim to the `rows` rows written, and give the shard its final name."""
        os.close(self.fd)
        self.fd = None
        if rows < self.max_rows:
            trim_npy_rows(self.tmp, rows)
        else:
            os.truncate(self.tmp, self.data_offset + rows * self.row_bytes)
        os.replace(self.tmp, self.path)
        self.rows = rows


def host_stats(rows: np.ndarray, chunk_rows: int = 16384) -> np.ndarray:
    """[sum of rows, sum of row L2 norms] in float64. rows: (n, dim) -> (dim + 1,)."""
    out = np.zeros(rows.shape[1] + 1, dtype=np.float64)
    for a in range(0, len(rows), chunk_rows):
        block = rows[a : a + chunk_rows].astype(np.float64)
        out[:-1] += block.sum(axis=0)
        out[-1] += np.sqrt(np.einsum("ij,ij->i", block, block)).sum()
    return out


def concat_npy(parts: list[Path], out: Path) -> np.ndarray:
    """Concatenate 1-D `.npy` files into `out` without holding them all; returns a memory map."""
    arrays = [np.load(p, mmap_mode="r") for p in parts]
    n = sum(len(a) for a in arrays)
    dtype = arrays[0].dtype if arrays else np.int64
    tmp = out.with_name(out.name + ".tmp")
    target = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n,))
    pos = 0
    for a in arrays:
        target[pos : pos + len(a)] = a
        pos += len(a)
    target.flush()
    del target
    os.replace(tmp, out)
    return np.load(out, mmap_mode="r")


def trim_npy_rows(path: Path, rows: int) -> None:
    """Shrink a C-ordered `.npy` file to its first `rows` rows in place, without copying data.

    The header is rewritten with the new shape, padded with spaces to its old length so that
    the data keeps its offset, and the file is truncated after the last kept row.
    """
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        if version != (1, 0):
            raise ValueError(f"{path}: only .npy format 1.0 files can be trimmed, got {version}")
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
        offset = fh.tell()
        if fortran_order or rows > shape[0]:
            raise ValueError(
                f"{path}: cannot trim {shape} (fortran={fortran_order}) to {rows} rows"
            )
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": (rows, *shape[1:]),
        }
        text = repr(header).encode("latin1")
        room = offset - 10  # magic (6) + version (2) + header length (2)
        if len(text) + 1 > room:
            raise ValueError(f"{path}: new header does not fit in the old one")
        fh.seek(8)
        fh.write(np.uint16(room).astype("<u2").tobytes())
        fh.write(text + b" " * (room - len(text) - 1) + b"\n")
        fh.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


class AsyncWriter:
    """Runs write tasks in one background thread so that disk copies overlap with the model.

    `submit` blocks when `max_pending` tasks wait; an error in a task is raised by the next
    `submit` or `join`. With `background=False` tasks run inline: on a CPU-only machine a
    second busy thread only steals cores from the model's own threads.
    """

    def __init__(self, max_pending: int = 4, background: bool = True) -> None:
        self._tasks: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="activation-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                if task is None:
                    return
                if self._error is None:
                    task()
            except BaseException as err:  # re-raised in the submitting thread
                self._error = err
            finally:
                self._tasks.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, task: Callable[[], None]) -> None:
        self._raise()
        if self._thread is None:
            task()
        else:
            self._tasks.put(task)

    def join(self) -> None:
        if self._thread is not None:
            self._tasks.join()
        self._raise()

    def close(self) -> None:
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join()
            self._thread = None


class PartialStore:
    """The partial directory of one extraction: progress, running statistics, finalisation."""

    def __init__(self, out_dir: Path, fingerprint: Mapping) -> None:
        self.out_dir = out_dir
        self.dir = out_dir.with_name(out_dir.name + ".partial")
        self.fingerprint = canonical(dict(fingerprint))
        self.progress: dict = {}

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> str:
        """Resume a matching partial directory or start a fresh one.

        Returns "fresh", "resume" or "finalized" (everything written, only the rename is left).
        """
        progress_path = self.dir / PROGRESS
        if self.dir.is_dir():
            if progress_path.is_file():
                progress = json.loads(progress_path.read_text())
                if progress.get("fingerprint") == self.fingerprint:
                    self.progress = progress
                    for tmp in self.dir.rglob("*.tmp"):
                        tmp.unlink()
                    return "resume"
            elif (self.dir / SUMMARY).is_file():
                summary = json.loads((self.dir / SUMMARY).read_text())
                if summary.get("fingerprint") == self.fingerprint:
                    self._remove_work_files()
                    return "finalized"
            log.warning(
                "discarding %s: it was computed from other inputs or settings (model weights, "
                "dataset content or extraction settings changed); extracting from scratch",
                self.dir,
            )
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.progress = {
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "sites": {},
            "shards": [],
        }
        atomic_write_text(progress_path, _json(self.progress))
        return "fresh"

    @property
    def shards_done(self) -> int:
        return len(self.progress["shards"])

    @property
    def sites(self) -> dict[str, dict]:
        """{site: {"dim": d, "columns": [row column names]}} known so far."""
        return self.progress["sites"]

    def site_dir(self, site: str) -> Path:
        path = self.dir / site
        path.mkdir(exist_ok=True)
        return path

    def shard_path(self, site: str, shard: int) -> Path:
        return self.site_dir(site) / f"shard_{shard:05d}.npy"

    def thumbnail_path(self, shard: int) -> Path:
        return self.dir / f"thumbnails_{shard:05d}.npy"

    def running_stats(self, site: str, dim: int) -> np.ndarray:
        """(dim + 1,) float64 [sum of rows, sum of norms] over the shards done so far."""
        if self.shards_done == 0 or site not in self.sites:
            return np.zeros(dim + 1, dtype=np.float64)
        return np.load(self.dir / site / f"stats_{self.shards_done - 1:05d}.npy")

    def commit_shard(
        self,
        record: dict,
        image_indices: np.ndarray,
        stats: Mapping[str, np.ndarray],
        site_info: Mapping[str, dict],
        columns: Mapping[str, Mapping[str, np.ndarray]],
    ) -> None:
        """Record shard `record["shard"]` as done (its site shards must already be in place).

        stats: {site: (dim + 1,) float64 running totals including this shard}; columns:
        {site: {column: (rows,) array}} of this shard.
        """
        s = int(record["shard"])
        atomic_save_npy(self.dir / f"images_{s:05d}.npy", image_indices.astype(np.int64))
        for site, cols in columns.items():
            for name, value in cols.items():
                atomic_save_npy(self.site_dir(site) / f"{name}_{s:05d}.npy", value)
        for site, total in stats.items():
            atomic_save_npy(self.site_dir(site) / f"stats_{s:05d}.npy", total)
        self.progress["sites"] = {k: dict(v) for k, v in site_info.items()}
        self.progress["shards"].append(record)
        atomic_write_text(self.dir / PROGRESS, _json(self.progress))
        if s > 0:
            for site in stats:
                (self.dir / site / f"stats_{s - 1:05d}.npy").unlink(missing_ok=True)

    # -- finalisation ------------------------------------------------------------------
    def finalize(
        self,
        metadata_common: Mapping,
        examples_table: pd.DataFrame,
        store_dtype: np.dtype,
        token_words: Callable[[list[int]], list[str]],
        extras: Mapping[str, object],
        overwrite: bool = False,
        thumbnail_px: int = 0,
    ) -> dict:
        """Write every site's metadata and row columns, the dataset's example table (and
        vocab.json, thumbnails.npy where there are tokens or thumbnails: the dataset's own in
        `extras`, or with `thumbnail_px` those the shards wrote), then rename the partial
        directory. Returns the summary written to `extraction.json`.
        """
        shards = self.progress["shards"]
        last = len(shards) - 1
        per_shard = [np.load(self.dir / f"images_{r['shard']:05d}.npy") for r in shards]
        examples_ok = np.concatenate(per_shard) if per_shard else np.empty(0, np.int64)
        skipped = [item for r in shards for item in r["skipped"]]
        if len(examples_ok) == 0:
            raise RuntimeError(
                f"no example could be read ({len(skipped)} skipped); see the log for the errors"
            )
        site_summaries = {}
        token_ids: set[int] = set()
        for site, info in self.sites.items():
            dim = int(info["dim"])
            count = int(sum(r["rows"].get(site, 0) for r in shards))
            totals = np.load(self.dir / site / f"stats_{last:05d}.npy")
            files = [
                {"file": f"shard_{r['shard']:05d}.npy", "rows": int(r["rows"].get(site, 0))}
                for r in shards
            ]
            for item in files:
                if item["rows"] == 0:
                    (self.dir / site / item["file"]).unlink(missing_ok=True)
            for name in info["columns"]:
                parts = [self.dir / site / f"{name}_{r['shard']:05d}.npy" for r in shards]
                column = concat_npy(parts, self.dir / site / f"{name}.npy")
                if name == "token_id":
                    token_ids.update(np.unique(column).tolist())
            layer, _, tokens = site.partition("_")
            metadata = {
                **metadata_common,
                "site": site,
                "layer": None if site == "pooled" else int(layer[1:]),
                "tokens": "pooled" if site == "pooled" else tokens,
                "count": count,
                "n_examples": len(examples_ok),
                "dim": dim,
                "dtype": np.dtype(store_dtype).name,
                "mean": (totals[:dim] / count).tolist(),
                "mean_norm": float(totals[dim] / count),
                "n_skipped": len(skipped),
                "skipped": skipped,
                "columns": list(info["columns"]),
                "shards": [item for item in files if item["rows"] > 0],
                "format_version": FORMAT_VERSION,
            }
            atomic_write_text(self.dir / site / METADATA, _json(metadata))
            site_summaries[site] = {"count": count, "dim": dim}
        atomic_write_csv(self.dir / EXAMPLES_CSV, examples_table)
        if token_ids:
            ids = sorted(token_ids)
            vocab = dict(zip(map(str, ids), token_words(ids), strict=True))
            atomic_write_text(self.dir / VOCAB, _json(vocab))
        if "thumbnails" in extras:
            atomic_save_npy(self.dir / THUMBNAILS, np.asarray(extras["thumbnails"]))
        elif thumbnail_px:
            self._gather_thumbnails(examples_table["index"].to_numpy(), thumbnail_px)
        summary = {
            "fingerprint": self.fingerprint,
            "sites": site_summaries,
            "dataset": extras.get("describe", {}),
            "n_examples": len(examples_ok),
            "n_skipped": len(skipped),
            "skipped": skipped,
        }
        atomic_write_text(self.dir / SUMMARY, _json(summary))
        (self.dir / PROGRESS).unlink()  # from here on, a rerun only renames
        self._remove_work_files()
        self.rename(overwrite)
        return summary

    def _gather_thumbnails(self, example_index: np.ndarray, px: int, block: int = 4096) -> None:
        """thumbnails.npy: uint8 (len(example_index), px, px, 3), row i the thumbnail of the
        example with dataset index example_index[i] (grey where it could not be read), copied
        shard by shard from the shards' thumbnail files, `block` thumbnails at a time."""
        position = np.full(int(example_index.max()) + 1, -1, dtype=np.int64)
        position[example_index] = np.arange(len(example_index))
        tmp = self.dir / (THUMBNAILS + ".tmp")
        shape = (len(example_index), px, px, 3)
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        target[:] = 128
        for record in self.progress["shards"]:
            s = int(record["shard"])
            indices = np.load(self.dir / f"images_{s:05d}.npy")
            thumbs = np.load(self.thumbnail_path(s), mmap_mode="r")
            if thumbs.shape != (len(indices), px * px * 3):
                raise RuntimeError(
                    f"{self.thumbnail_path(s)}: shape {thumbs.shape}, expected "
                    f"({len(indices)}, {px * px * 3}) for the shard's {len(indices)} examples"
                )
            for a in range(0, len(indices), block):
                part = thumbs[a : a + block].reshape(-1, px, px, 3)
                target[position[indices[a : a + block]]] = part
        target.flush()
        del target
        os.replace(tmp, self.dir / THUMBNAILS)

    def _remove_work_files(self) -> None:
        """Delete what only the running extraction needs (indices, running stats, temp files)."""
        shard_parts = [f"*/{name}_[0-9]*.npy" for name in ("stats", *COLUMNS)]
        for pattern in ("images_*.npy", "thumbnails_*.npy", *shard_parts, "**/*.tmp"):
            for path in self.dir.glob(pattern):
                path.unlink()

    def rename(self, overwrite: bool = False) -> None:
        """Move the finished partial directory to the final path."""
        if self.out_dir.exists():
            if overwrite:
                shutil.rmtree(self.out_dir)
            elif self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()
            else:
                raise FileExistsError(
                    f"{self.out_dir} already exists; delete it or pass overwrite=True "
                    f"(the finished extraction is kept in {self.dir})"
                )
        os.replace(self.dir, self.out_dir)
