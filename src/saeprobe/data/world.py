"""Synthetic-world splits as image datasets (read by saeprobe.world.generate.load_split)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from saeprobe.data.base import ImageBatch, ImageDataset
from saeprobe.data.preprocess import PreprocessParams, transform_batch
from saeprobe.world.generate import load_split, split_files

_END = object()


class WorldArrayDataset(ImageDataset):
    """A split of the synthetic world, read from one memory-mapped array.

    Batches are slices of the array, read and resized as whole batches (no per-image Python
    work, no worker processes competing with the model for cores). `max_images` keeps a seeded
    random subset (in split order). `manifest.index` is the position in this dataset, the
    split's own row number is kept as `source_index`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        params: PreprocessParams,
        max_images: int | None = None,
        seed: int = 0,
        name: str | None = None,
        spec: dict | None = None,
    ) -> None:
        images, manifest = load_split(root, split, mmap=True, columns=("label",))
        self.images_file = split_files(root, split)[0]
        self.rows: np.ndarray | None = None
        if max_images is not None and max_images < len(images):
            self.rows = np.sort(np.random.default_rng(seed).permutation(len(images))[:max_images])
            manifest = manifest.iloc[self.rows]
        manifest = manifest.reset_index(drop=True)
        if "index" in manifest.columns:
            manifest = manifest.rename(columns={"index": "source_index"})
        manifest.insert(0, "index", np.arange(len(manifest)))
        self.images = images
        self.manifest = manifest
        self.params = params
        self.name = name or f"world_{split}"
        self.spec = dict(spec or {"source": "world", "root": str(root), "split": split})

    def load_range(self, start: int, stop: int) -> torch.Tensor:
        """Images `[start, stop)` as (batch, 3, image_size, image_size) uint8."""
        if self.rows is None:
            block = self.images[start:stop]
        else:
            block = self.images[self.rows[start:stop]]
        out = torch.empty((len(block), 3, *block.shape[1:3]), dtype=torch.uint8)
        np.copyto(out.numpy(), block.transpose(0, 3, 1, 2))
        return transform_batch(out, self.params)

    def content_key(self) -> str:
        """sha256 of the split's images.npy: the pixels the activations are computed from."""
        from saeprobe.training import file_digest

        return file_digest(self.images_file)

    def iter_batches(
        self,
        ranges: Sequence[tuple[int, int]],
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch: bool = True,
    ) -> Iterator[ImageBatch]:
        """Yield the batches, read ahead in a background thread when `prefetch` is set.

        `num_workers` is ignored: a slice of a memory-mapped array needs no worker processes.
        """
        del num_workers
        if not prefetch:
            for start, stop in ranges:
                images = self.load_range(start, stop)
                indices = np.arange(start, stop, dtype=np.int64)
                yield ImageBatch(indices, images.pin_memory() if pin_memory else images)
            return
        ahead: queue.Queue = queue.Queue(maxsize=2)
        stop_event = threading.Event()

        def produce() -> None:
            try:
                for start, stop in ranges:
                    if stop_event.is_set():
                        return
                    images = self.load_range(start, stop)
                    if pin_memory:
                        images = images.pin_memory()
                    indices = np.arange(start, stop, dtype=np.int64)
                    ahead.put(ImageBatch(indices=indices, images=images))
            except BaseException as err:  # handed to the consumer, which re-raises it
                ahead.put(err)
                return
            ahead.put(_END)

        thread = threading.Thread(target=produce, name="world-reader", daemon=True)
        thread.start()
        try:
            while True:
                item = ahead.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop_event.set()
            while thread.is_alive():
                try:
                    ahead.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()
