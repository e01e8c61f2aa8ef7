"""Resumable, checksummed downloads for the paper config's public datasets and files."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _total_size(response: Any, offset: int) -> int | None:
    """The whole file's size the server announces: Content-Range's total on a 206, else
    Content-Length (None when the server does not say)."""
    if response.status == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def https_first(url: str) -> list[str]:
    """The URLs to try for `url`: an http URL is tried over https first (most hosts offer it),
    then as given."""
    if url.startswith("http://"):
        return ["https://" + url.removeprefix("http://"), url]
    return [url]


def _fetch(url: str, part: Path, sha256: str | None, timeout: float) -> int | None:
    """Append `url`'s remaining bytes to `part` (an HTTP Range request from its current size);
    returns the whole file's announced size (None when unknown). OSError on a network failure."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the range: start over
            total = _total_size(response, offset)
            with (
                open(part, "ab" if offset else "wb") as fh,
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name) as bar,
            ):
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    bar.update(len(block))
            return total
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # the .part already holds every byte the server has
        match = re.match(r"bytes \*/(\d+)", err.headers.get("Content-Range", ""))
        total = int(match.group(1)) if match else None
        if total is None and sha256 is None:
            part.unlink()
            raise DownloadError(
                f"{url}: the server refused to resume {part} without saying the file's size; "
                "the partial file is removed and the next run starts over"
            ) from err
        return total


def ensure(url: str, dest: str | Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` unless it is already there with the right checksum.

    A partial download is kept as `dest.part` and resumed with an HTTP Range request; a file
    is accepted only when the bytes received add up to the size the server announced
    (Content-Length, or Content-Range's total): a dropped connection raises `DownloadError` and
    the next call resumes. A `.part` that already holds the whole file (the server answers 416)
    is finalised and verified. An http URL is tried over https first (`https_first`). With
    `sha256` None the first complete download is trusted: its
    checksum is logged and recorded next to it in `dest.sha256`, and later calls verify against
    that record (put it in the config to pin it). A complete file with the wrong checksum is
    removed and raises `DownloadError` naming the url, the file and both checksums.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sidecar = dest.with_name(dest.name + ".sha256")
    if sha256 is None and sidecar.is_file():
        sha256 = sidecar.read_text().split()[0]
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    part = dest.with_name(dest.name + ".part")
    candidates = https_first(url)
    for i, candidate in enumerate(candidates):
        try:
            total = _fetch(candidate, part, sha256, timeout)
            break
        except OSError as err:
            if i + 1 < len(candidates):
                log.warning("%s failed (%s); falling back to %s", candidate, err, candidates[i + 1])
                continue
            raise DownloadError(
                f"download of {url} to {dest} failed ({err}); the partial file {part} is kept "
                f"and the next run resumes it"
            ) from err
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise DownloadError(
            f"download of {url} to {dest} is incomplete: {size} of {total} bytes received"
            + ("; the partial file is kept and the next run resumes it" if size < total else "")
        )
    if total is None:
        log.warning("%s: the server did not announce the size; the download is unverified", url)
    got = sha256_of(part)
    if sha256 is not None and got != sha256:
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {url} (saved to {dest}): expected sha256 {sha256}, got {got}"
        )
    log.info("%s: sha256 %s", dest, got)
    os.replace(part, dest)
    sidecar.write_text(f"{got}  {dest.name}\n")
    return dest


def unzip_into(archive: Path, root: Path) -> None:
    """Unzip `archive` into `root` file by file, so folders that already exist are merged into
    (each file moved into place from a scratch folder under `root`)."""
    tmp = root / f".{archive.stem}.unzip"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp)
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            target = root / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    shutil.rmtree(tmp)
    log.info("unzipped %s into %s", archive, root)


def download_coco(url: str, sha256: str | None, root: str | Path) -> Path:
    """One COCO archive (`saeprobe.config.coco_archive`): download `url` into `root/zips`
    (resumable; sha256 None = trust the first download, see `ensure`) and unzip it into `root`.
    Returns the zip."""
    root = Path(root)
    archive = ensure(url, root / "zips" / Path(url).name, sha256)
    unzip_into(archive, root)
    return archive
