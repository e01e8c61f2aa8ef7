"""ImageNet-style folders: root/<class>/<file>, label = folder name."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from saeprobe.data.base import ImageBatch, ImageDataset, SkippedImage
from saeprobe.data.preprocess import PreprocessParams, draft, transform_pil
from saeprobe.data.thumbnails import thumbnail

log = logging.getLogger(__name__)


def list_image_folder(root: Path) -> list[tuple[str, str]]:
    """(relative path, label) of every file under root/<class>/, sorted; hidden files skipped."""
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                items.append((path.relative_to(root).as_posix(), class_dir.name))
    return items


def _relabel_by_index(
    items: list[tuple[str, str]], classes_root: Path, key: str
) -> list[tuple[str, str]]:
    """Folders named 0..K-1 (ImageNet-V2) get the class names of another image folder, in
    sorted order: folder i -> the i-th sorted class directory of `classes_root`."""
    if not classes_root.is_dir():
        raise FileNotFoundError(
            f"{key}: index_labels_from needs the class folders of {classes_root}, which does "
            "not exist"
        )
    classes = sorted(
        p.name for p in classes_root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    relabelled = []
    for path, folder in items:
        if not folder.isdigit() or int(folder) >= len(classes):
            raise ValueError(
                f"{key}: class folder {folder!r} is not an index below {len(classes)} (the "
                f"number of classes in {classes_root})"
            )
        relabelled.append((path, classes[int(folder)]))
    return relabelled


# PIL's own bound (Image.MAX_IMAGE_PIXELS) only warns below twice its value; a few KB of PNG can
# announce 100 megapixels and cost each loader worker gigabytes when decoded.
MAX_PIXELS = 50_000_000


class _DecodeItems(Dataset):
    """Decodes one image per index in a DataLoader worker; errors are returned, not raised.

    An image whose header announces more than `max_pixels` pixels is refused before decoding.
    With `draft`, JPEGs decode at a reduced scale where the resize target allows
    (`preprocess.draft`). With `thumbnail_px`, each item also carries a thumbnail made from the
    decoded image before the model's resize (`thumbnails.thumbnail`; no second decode).
    """

    def __init__(
        self,
        root: Path,
        paths: list[str],
        params: PreprocessParams,
        max_pixels: int,
        draft: bool = True,
        thumbnail_px: int = 0,
    ) -> None:
        self.root, self.paths, self.params, self.max_pixels = root, paths, params, max_pixels
        self.draft, self.thumbnail_px = draft, thumbnail_px

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, np.ndarray | None, str]:
        """(index, (3, S, S) uint8 model input, (px, px, 3) uint8 thumbnail or None, error)."""
        path = self.root / self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = image.width * image.height
                if pixels > self.max_pixels:
                    raise ValueError(
                        f"{image.width} x {image.height} = {pixels} pixels, more than the "
                        f"{self.max_pixels} allowed (datasets.<name>.max_pixels)"
                    )
                if self.draft:
                    draft(image, self.params)
                image.load()
                rgb = image if image.mode == "RGB" else image.convert("RGB")
                thumb = thumbnail(rgb, self.thumbnail_px) if self.thumbnail_px else None
                return index, transform_pil(rgb, self.params), thumb, ""
        except Exception as err:  # any decode failure skips the image, never the run
            return index, None, None, f"{type(err).__name__}: {err}"


def _collate(items: list[tuple[int, torch.Tensor | None, np.ndarray | None, str]]) -> tuple:
    ok = [(i, x, t) for i, x, t, _ in items if x is not None]
    bad = [(i, e) for i, x, _, e in items if x is None]
    indices = np.array([i for i, _, _ in ok], dtype=np.int64)
    images = torch.stack([x for _, x, _ in ok]) if ok else None
    thumbs = np.stack([t for _, _, t in ok]) if ok and ok[0][2] is not None else None
    return indices, images, thumbs, bad


class ImageFolderDataset(ImageDataset):
    """Images under root/<class>/<file>, decoded, resized and cropped in DataLoader workers.

    `max_images` keeps a seeded random subset (in sorted order) of that many files.
    A corrupt or non-image file is logged with its path and skipped. Set `thumbnail_px` to a
    side in pixels and every batch also carries a thumbnail of each image, made in the worker
    from the image it decoded for the model (`ImageBatch.thumbnails`).
    """

    thumbnail_px: int = 0

    def __init__(
        self,
        root: str | Path,
        params: PreprocessParams,
        max_images: int | None = None,
        seed: int = 0,
        name: str | None = None,
        spec: dict | None = None,
    ) -> None:
        root = Path(root)
        key = f"datasets.{name}.root" if name else "root"
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {str(root)!r} (config key {key}) does not exist or is not a "
                "directory; expected an ImageNet-style layout root/<class>/<image file>"
            )
        items = list_image_folder(root)
        if not items:
            raise ValueError(
                f"image folder {str(root)!r} (config key {key}) holds no files in class "
                "sub-folders; expected an ImageNet-style layout root/<class>/<image file>"
            )
        if spec and spec.get("index_classes_root"):
            items = _relabel_by_index(items, Path(spec["index_classes_root"]), key)
        if max_images is not None and max_images < len(items):
            keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:max_images])
            items = [items[i] for i in keep]
        self.root = root
        self.params = params
        self.name = name or root.name
        self.spec = dict(spec or {"source": "imagefolder", "root": str(root)})
        self.max_pixels = int(self.spec.get("max_pixels") or MAX_PIXELS)
        self.manifest = pd.DataFrame(
            {
                "index": np.arange(len(items)),
                "path": [p for p, _ in items],
                "label": [c for _, c in items],
            }
        )

    def iter_batches(
        self,
        ranges: Sequence[tuple[int, int]],
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch: bool = True,
    ) -> Iterator[ImageBatch]:
        del prefetch  # worker processes read ahead already
        items = _DecodeItems(
            self.root,
            self.manifest["path"].tolist(),
            self.params,
            self.max_pixels,
            thumbnail_px=self.thumbnail_px,
        )
        loader = DataLoader(
            items,
            batch_sampler=[list(range(a, b)) for a, b in ranges],
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=pin_memory,
            prefetch_factor=4 if num_workers > 0 else None,
        )
        size = self.params.image_size
        px = self.thumbnail_px
        for indices, images, thumbs, bad in loader:
            skipped = [
                SkippedImage(index=int(i), path=str(self.root / items.paths[i]), error=e)
                for i, e in bad
            ]
            for s in skipped:
                log.warning("skipping unreadable image %s: %s", s.path, s.error)
            if images is None:
                images = torch.empty((0, 3, size, size), dtype=torch.uint8)
            if px and thumbs is None:
                thumbs = np.empty((0, px, px, 3), dtype=np.uint8)
            yield ImageBatch(indices=indices, images=images, skipped=skipped, thumbnails=thumbs)
