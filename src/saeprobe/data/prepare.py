"""Make an image-folder dataset ready before any GPU job reads it: download and unpack a public
archive, or fetch a gated one from the HF hub, then check the folder layout."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from saeprobe.data.download import ensure
from saeprobe.data.imagefolder import list_image_folder

log = logging.getLogger(__name__)

WNID_FILE = re.compile(r"(n\d{8})\.(jpe?g|png)$", re.IGNORECASE)


class DatasetMissing(FileNotFoundError):
    pass


def unpack(archive: Path, dest: Path) -> None:
    """Unpack a .tar/.tar.gz/.tgz/.zip archive into `dest` (no member may escape it)."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (dest / member).resolve().is_relative_to(dest.resolve()):
                    raise ValueError(f"{archive}: member {member!r} escapes {dest}")
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    else:
        raise ValueError(f"{archive}: not a tar or zip archive")


def unpack_into_place(archive: Path, dest: Path) -> None:
    """Unpack into a staging folder beside `dest`, then move each top-level entry into `dest`
    (replacing one of the same name): a killed unpack never leaves a partial folder that a
    later run would take for a complete dataset."""
    staging = dest.with_name(f".{dest.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    unpack(archive, staging)
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(staging.iterdir()):
        target = dest / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(entry, target)
    staging.rmdir()


def sort_by_wnid(archive: Path, dest: Path) -> int:
    """Unpack an archive of files named `..._<wnid>.JPEG` (the HF hub's ImageNet-1k) into
    dest/<wnid>/<file>; returns the number of images."""
    staging = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    unpack(archive, staging)
    count = 0
    for path in sorted(staging.rglob("*")):
        match = WNID_FILE.search(path.name)
        if path.is_file() and match:
            target = dest / match.group(1) / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            count += 1
    shutil.rmtree(staging)
    return count


def _from_hub(name: str, hub: Mapping, dest: Path, downloads: Path) -> None:
    from huggingface_hub import hf_hub_download

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise DatasetMissing(
            f"dataset {name}: {hub['repo']} is gated on the HF hub; accept its terms on "
            "huggingface.co and export HF_TOKEN=<your token> before running, or put the images "
            f"in ImageNet layout under {dest}/<wnid>/<image> and remove datasets.{name}.hub"
        )
    for file in hub["files"]:
        archive = hf_hub_download(
            hub["repo"], file, repo_type="dataset", token=token, cache_dir=downloads
        )
        log.info("%s: %d images from %s", name, sort_by_wnid(Path(archive), dest), file)


def prepare_imagefolder(name: str, spec: Mapping, data_dir: str | Path) -> dict:
    """Download/unpack as the spec says, then check root; returns {root, n_images, n_classes}.

    Raises DatasetMissing with what to put where when the folder is absent or empty.
    """
    root, data_dir = Path(spec["root"]), Path(data_dir)
    downloads = data_dir / "downloads"
    if not root.is_dir() and "download" in spec:
        entry = spec["download"]
        archive = ensure(entry["url"], downloads / Path(entry["url"]).name, entry.get("sha256"))
        unpack_into_place(archive, data_dir / name)
    if not root.is_dir() and "hub" in spec:
        _from_hub(name, spec["hub"], root, downloads)
    if not root.is_dir():
        raise DatasetMissing(
            f"dataset {name}: image folder {root} does not exist. Put the images there in "
            f"ImageNet layout ({root}/<class>/<image>), or point config key "
            f"datasets.{name}.root at them"
            + ("" if "download" in spec else f", or give datasets.{name}.download (url, sha256)")
        )
    items = list_image_folder(root)
    if not items:
        raise DatasetMissing(
            f"dataset {name}: {root} holds no images in class folders; expected "
            f"{root}/<class>/<image>"
        )
    return {"root": str(root), "n_images": len(items), "n_classes": len({c for _, c in items})}
