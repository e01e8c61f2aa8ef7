"""Extraction: dataset -> collector -> sharded activation store, resumable after a kill.

One loop serves every model family: the collector (saeprobe.backbones.load_collector) opens
the dataset and turns each batch of examples into rows per site (`SiteRows`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from saeprobe.activations.writer import (
    SUMMARY,
    AsyncWriter,
    PartialStore,
    SiteShard,
    host_stats,
)
from saeprobe.backbones import Collector, SiteRows, load_collector

log = logging.getLogger(__name__)

STORE_DTYPES = {
    "float16": np.float16,
    "fp16": np.float16,
    "float32": np.float32,
    "fp32": np.float32,
}


_TORCH_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


def store_dtype(name: str) -> np.dtype:
    if name not in STORE_DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(STORE_DTYPES)}, got {name!r}")
    return np.dtype(STORE_DTYPES[name])


def inputs_key(collector: Collector, dataset: object) -> dict[str, str | None]:
    """Digests of what the activations are computed from: the model's local weight files, the
    dataset's example table and, where the dataset knows it, the content of its images. A
    partial store is resumed only when they match."""
    manifest = dataset.manifest.to_csv(index=False).encode()
    content = getattr(dataset, "content_key", None)
    return {
        "weights": collector.weights_key(),
        "examples": hashlib.sha256(manifest).hexdigest(),
        "data": content() if content is not None else None,
    }


def _batch_ranges(
    n_examples: int, first_shard: int, shard_examples: int, batch_size: int
) -> list[tuple[int, int, int]]:
    """(shard, start, stop) of every batch from `first_shard` on; no batch crosses a shard."""
    out = []
    for s in range(first_shard, math.ceil(n_examples / shard_examples)):
        a, b = s * shard_examples, min(n_examples, (s + 1) * shard_examples)
        out.extend((s, start, min(b, start + batch_size)) for start in range(a, b, batch_size))
    return out


class _ShardState:
    """What one shard accumulates while its batches run."""

    def __init__(self, shard: int, start: int, stop: int) -> None:
        self.shard, self.start, self.stop = shard, start, stop
        self.files: dict[str, SiteShard] = {}
        self.rows: dict[str, int] = {}
        self.sums: dict[str, torch.Tensor | np.ndarray] = {}  # (dim + 1,) float64
        self.columns: dict[str, dict[str, list[np.ndarray]]] = {}  # site -> column -> parts
        self.indices: list[np.ndarray] = []
        self.skipped: list[dict] = []
        self.thumbnails: SiteShard | None = None  # (rows, px * px * 3) uint8, rows = examples
        self.thumbnail_rows = 0


def extract(
    dataset_spec: Mapping,
    model_spec: Mapping,
    out_dir: str | Path,
    *,
    batch_size: int = 256,
    dtype: str = "float16",
    shard_examples: int = 4096,
    num_workers: int = 2,
    device: str | torch.device = "auto",
    seed: int = 0,
    precision: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    on_shard_complete: Callable[[int], None] | None = None,
    collector: Collector | None = None,
    thumbnail_px: int = 0,
) -> dict:
    """Extract every site the model spec asks for into `out_dir/{site}/`.

    dataset_spec: a `datasets:` entry the model's collector can open (images, prompts or
    image + caption pairs); model_spec: a `models:` entry (see
    `saeprobe.backbones.load_collector`). Work happens in `{out_dir}.partial/`; a rerun after
    a kill resumes at the first unfinished shard (of `shard_examples` examples) and gives
    byte-identical files. `on_shard_complete(shard)` is called after each shard is committed.
    `collector`: an already loaded collector for `model_spec` (else it is loaded here).
    `thumbnail_px` > 0 (image folders only): keep a thumbnail of that side of every image, made
    in the loader from the decoded image and written per shard beside the rows, then gathered
    into the store's thumbnails.npy (one per row of examples.csv; grey for a skipped image).
    Returns a summary with the sites, counts, skipped examples and timings (seconds: setup_s
    for loading, loop_s for the batches, finalize_s for metadata and the final rename).
    """
    out_dir = Path(out_dir)
    np_dtype = store_dtype(dtype)
    if batch_size <= 0 or shard_examples <= 0:
        raise ValueError(
            f"batch_size and shard_examples must be positive ({batch_size}, {shard_examples})"
        )
    if thumbnail_px < 0:
        raise ValueError(f"thumbnail_px must be 0 (none) or a side in pixels, got {thumbnail_px}")
    if out_dir.exists() and not overwrite and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already exists; delete it or pass overwrite=True")
    t_setup = time.perf_counter()
    torch.manual_seed(seed)
    if collector is None:
        collector = load_collector(model_spec, device, precision, seed)
    sites = collector.sites()
    dataset = collector.open(dataset_spec, seed)
    if thumbnail_px:
        if not hasattr(dataset, "thumbnail_px"):
            raise ValueError(
                f"thumbnail_px: dataset {dataset.name!r} (source "
                f"{dataset_spec.get('source')!r}) cannot make thumbnails at extraction; only an "
                "image folder can (extract.thumbnails)"
            )
        dataset.thumbnail_px = thumbnail_px
    n_examples = len(dataset)
    settings = {
        "batch_size": batch_size,
        "dtype": np_dtype.name,
        "shard_examples": shard_examples,
        "precision": precision,
        "seed": seed,
        "device_type": collector.device.type,
    }
    if thumbnail_px:  # absent when off, so stores without thumbnails keep their fingerprint
        settings["thumbnail_px"] = thumbnail_px
    fingerprint = {
        "model": dict(model_spec),
        "dataset": dict(dataset_spec),
        "n_examples": n_examples,
        "settings": settings,
        "inputs": inputs_key(collector, dataset),
    }
    partial = PartialStore(out_dir, fingerprint)
    state = partial.open()
    if state == "finalized":
        partial.rename(overwrite)
        summary = json.loads((out_dir / SUMMARY).read_text())
        return {
            **summary,
            "out_dir": str(out_dir),
            "resumed_from_shard": None,
            "examples_processed": 0,
            "setup_s": time.perf_counter() - t_setup,
            "loop_s": 0.0,
            "finalize_s": 0.0,
        }
    first = partial.shards_done
    if state == "resume":
        log.info("resuming %s at shard %d (%d done)", partial.dir, first, first)
    ranges = _batch_ranges(n_examples, first, shard_examples, batch_size)
    setup_s = time.perf_counter() - t_setup

    site_info: dict[str, dict] = {k: dict(v) for k, v in partial.sites.items()}
    running = {s: partial.running_stats(s, int(i["dim"])) for s, i in site_info.items()}
    cuda = collector.device.type == "cuda"
    writer = AsyncWriter(background=cuda)
    batches = dataset.iter_batches(
        [(a, b) for _, a, b in ranges], num_workers, pin_memory=cuda, prefetch=cuda
    )
    bar = tqdm(
        total=n_examples,
        initial=min(n_examples, first * shard_examples),
        unit="ex",
        desc=f"extract {collector.name} / {dataset.name}",
        disable=not progress,
        file=sys.stderr,
        mininterval=1.0 if sys.stderr.isatty() else 15.0,
    )
    shard: _ShardState | None = None
    t_loop = time.perf_counter()
    n_done = n_stored = 0
    try:
        for (s, start, stop), batch in zip(ranges, batches, strict=True):
            if shard is None or shard.shard != s:
                shard = _ShardState(
                    s, s * shard_examples, min(n_examples, (s + 1) * shard_examples)
                )
                if thumbnail_px:
                    shard.thumbnails = SiteShard(
                        partial.thumbnail_path(s),
                        shard.stop - shard.start,
                        thumbnail_px * thumbnail_px * 3,
                        np.dtype(np.uint8),
                    )
            shard.indices.append(batch.indices)
            shard.skipped.extend(item.to_dict() for item in batch.skipped)
            if shard.thumbnails is not None:
                _write_thumbnails(shard, batch, writer)
            if len(batch.indices):
                for site, rows in collector.collect(batch).items():
                    bound = collector.max_rows_per_example(site)
                    _write_site(
                        partial, shard, site, rows, bound, site_info, running, writer, np_dtype
                    )
            n_done += stop - start
            n_stored += len(batch.indices)
            bar.update(stop - start)
            if stop == shard.stop:
                writer.join()
                _commit(partial, shard, site_info, running)
                if on_shard_complete is not None:
                    on_shard_complete(s)
    finally:
        bar.close()
        batches.close()
        writer.close()
        if shard is not None:
            for target in shard.files.values():
                target.abort()
            if shard.thumbnails is not None:
                shard.thumbnails.abort()
    loop_s = time.perf_counter() - t_loop
    if n_done:
        log.info(
            "stored %d of %d examples in %.1f s (%.1f ex/s)",
            n_stored,
            n_done,
            loop_s,
            n_done / loop_s,
        )
    missing = sorted(set(sites) - set(site_info))
    if missing:
        raise RuntimeError(f"{collector.name}: no rows were collected for sites {missing}")
    metadata_common = {
        "model": dict(model_spec),
        "dataset": {**dict(dataset_spec), "name": dataset.name},
        "backbone": collector.describe(),
        "settings": settings,
    }
    t_finalize = time.perf_counter()
    extras = _dataset_extras(dataset)
    summary = partial.finalize(
        metadata_common,
        dataset.manifest,
        np_dtype,
        collector.token_words,
        extras,
        overwrite,
        thumbnail_px=thumbnail_px,
    )
    finalize_s = time.perf_counter() - t_finalize
    if summary["n_skipped"]:
        log.warning(
            "%d unreadable examples were skipped: %s",
            summary["n_skipped"],
            ", ".join(item["path"] for item in summary["skipped"][:20]),
        )
    return {
        **summary,
        "out_dir": str(out_dir),
        "resumed_from_shard": first if state == "resume" else None,
        "examples_processed": n_done,
        "setup_s": setup_s,
        "loop_s": loop_s,
        "finalize_s": finalize_s,
    }


def _dataset_extras(dataset: object) -> dict[str, object]:
    """Dataset-level files beyond the manifest: thumbnails (pairs) and a description."""
    extras: dict[str, object] = {}
    if hasattr(dataset, "thumbnails"):
        extras["thumbnails"] = dataset.thumbnails()
    if hasattr(dataset, "describe"):
        extras["describe"] = dataset.describe()
    return extras


def _write_thumbnails(shard: _ShardState, batch: object, writer: AsyncWriter) -> None:
    """Queue a batch's thumbnails ((n, px, px, 3) uint8, one per index read) for its shard."""
    thumbs = batch.thumbnails
    if thumbs is None or len(thumbs) != len(batch.indices):
        got = None if thumbs is None else len(thumbs)
        raise RuntimeError(f"a batch of {len(batch.indices)} images came with {got} thumbnails")
    target, offset = shard.thumbnails, shard.thumbnail_rows
    shard.thumbnail_rows += len(thumbs)
    rows = np.ascontiguousarray(thumbs).reshape(len(thumbs), -1)
    writer.submit(lambda: target.write(offset, rows))


def _write_site(
    partial: PartialStore,
    shard: _ShardState,
    site: str,
    rows: SiteRows,
    max_rows_per_example: int,
    site_info: dict[str, dict],
    running: dict[str, np.ndarray],
    writer: AsyncWriter,
    np_dtype: np.dtype,
) -> None:
    """Cast one site's batch to the store dtype, add it to the shard's statistics and queue it.

    rows.acts: (n, d) with its row columns (example, position, token id, modality).
    """
    dim = rows.acts.shape[-1]
    columns = rows.columns()
    info = site_info.setdefault(site, {"dim": dim, "columns": sorted(columns)})
    if (info["dim"], info["columns"]) != (dim, sorted(columns)):
        raise RuntimeError(f"site {site}: got d={dim}, columns {sorted(columns)}; expected {info}")
    running.setdefault(site, np.zeros(dim + 1, dtype=np.float64))
    acts = rows.acts.to(_TORCH_DTYPES[np_dtype])
    if site not in shard.files:
        max_rows = (shard.stop - shard.start) * max_rows_per_example
        path = partial.shard_path(site, shard.shard)
        shard.files[site] = SiteShard(path, max_rows, dim, np_dtype)
        shard.rows[site] = 0
        shard.columns[site] = {name: [] for name in columns}
    for name, value in columns.items():
        shard.columns[site][name].append(value)
    target, offset = shard.files[site], shard.rows[site]
    shard.rows[site] += acts.shape[0]
    if acts.device.type == "cuda":
        # statistics on the device; the copy to the host overlaps with the next batch
        acc = shard.sums.get(site)
        if acc is None:
            acc = shard.sums[site] = torch.zeros(dim + 1, dtype=torch.float64, device=acts.device)
        acc[:dim] += acts.sum(dim=0, dtype=torch.float64)
        acc[dim] += torch.linalg.vector_norm(acts, dim=1, dtype=torch.float64).sum()
        host = acts.to("cpu", non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()

        def task() -> None:
            ready.synchronize()
            target.write(offset, host.numpy())

    else:
        # numpy's float64 reductions are several times faster than torch's on CPU
        host_rows = acts.numpy()
        previous = shard.sums.get(site)
        stats = host_stats(host_rows)
        shard.sums[site] = stats if previous is None else previous + stats

        def task() -> None:
            target.write(offset, host_rows)

    writer.submit(task)


def _commit(
    partial: PartialStore,
    shard: _ShardState,
    site_info: dict[str, dict],
    running: dict[str, np.ndarray],
) -> None:
    """Close the shard's files, fold its statistics into the running totals and commit it."""
    for site, target in shard.files.items():
        target.close(shard.rows[site])
    if shard.thumbnails is not None:
        shard.thumbnails.close(shard.thumbnail_rows)
    for site, acc in shard.sums.items():
        shard_total = acc.cpu().numpy() if isinstance(acc, torch.Tensor) else acc
        running[site] = running[site] + shard_total
    record = {
        "shard": shard.shard,
        "start": shard.start,
        "stop": shard.stop,
        "n_examples": int(sum(len(i) for i in shard.indices)),
        "rows": {site: int(n) for site, n in shard.rows.items()},
        "skipped": shard.skipped,
    }
    indices = np.concatenate(shard.indices) if shard.indices else np.empty(0, np.int64)
    columns = {
        site: {name: np.concatenate(parts) for name, parts in cols.items()}
        for site, cols in shard.columns.items()
    }
    partial.commit_shard(record, indices, running, site_info, columns)


__all__ = ["extract", "store_dtype"]
