"""Tiny datasets packed as their public archives are, laid out from the config's own entries.

Every `imagefolder` dataset with a `download` URL becomes an archive at the URL's path under the
hub's `files/` folder, its format from the URL (.tar, .tar.gz/.tgz, .zip) and its top-level
folders those of the real archive: the dataset's `root` below `data/<name>/` (where
`prepare_dataset` unpacks it), e.g. `iNaturalist/`, `dtd/images/`, `NINCO/NINCO_OOD_classes/`.
Class folders follow the dataset's role in the config: ImageNet wnids for the shifted test sets
(`CLASS_SUBSETS` names those that hold only part of the classes), class indices for a set with
`index_labels_from`, classes of their own for OOD sets. A dataset with neither `download` nor a
gated `hub` (OpenImage-O) and ImageNet (gated) are written straight into their `root`, where
the user puts them. WordNet's two files and the COCO archives go to their URLs' paths too.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

# ImageNet classes of the miniature (real wnids) and a hierarchy above them: (parent, child).
WNIDS = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n02085620": "Chihuahua",
    "n02085782": "Japanese spaniel",
    "n02123045": "tabby",
    "n02123159": "tiger cat",
    "n03417042": "garbage truck",
    "n03930630": "pickup",
}
INNER = {
    "n00001740": "entity",
    "n00021939": "artifact",
    "n00015388": "animal",
    "n02512053": "fish",
    "n02084071": "dog",
    "n02121808": "domestic cat",
    "n04576211": "wheeled vehicle",
}
IS_A = [
    ("n00001740", "n00021939"),
    ("n00001740", "n00015388"),
    ("n00015388", "n02512053"),
    ("n00015388", "n02084071"),
    ("n00015388", "n02121808"),
    ("n00021939", "n04576211"),
    ("n02512053", "n01440764"),
    ("n02512053", "n01443537"),
    ("n02084071", "n02085620"),
    ("n02084071", "n02085782"),
    ("n02121808", "n02123045"),
    ("n02121808", "n02123159"),
    ("n04576211", "n03417042"),
    ("n04576211", "n03930630"),
]
# The shifted sets that cover only some ImageNet classes (R and A: 200 of the 1000).
CLASS_SUBSETS = {"imagenet_r": 6, "imagenet_a": 5}
OOD_CLASSES = 3
# COCO categories (name, supercategory), one per image in turn, and the words of the captions:
# each category is named in a third of the captions, enough for the crossmodal task's
# `min_count` on the evaluation pairs.
COCO_CATEGORIES = [("dog", "animal"), ("car", "vehicle"), ("pizza", "food")]
COLOURS = ["red", "black", "white", "small"]
PLACES = ["on a table", "in a street", "on the grass", "near a window"]


def archive_kind(url: str) -> str:
    """tar, tar.gz or zip, from the URL's file name."""
    name = PurePosixPath(urlparse(url).path).name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    raise ValueError(f"{url}: expected a .tar, .tar.gz, .tgz or .zip archive")


def url_path(files: Path, url: str) -> Path:
    """Where the hub serves `url`: its path below `files/`."""
    return files / urlparse(url).path.lstrip("/")


def image_bytes(rng: np.random.Generator, colour: np.ndarray, size: int) -> bytes:
    """A JPEG of `size`² px: noise around `colour` (3,) so that classes differ a little."""
    pixels = np.clip(colour + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def class_colour(name: str) -> np.ndarray:
    seed = int.from_bytes(name.encode()[-4:].rjust(4, b"\0"), "little")
    return np.random.default_rng(seed).uniform(30, 225, 3)


def folder_files(
    classes: list[str], per_class: int, seed: int, size: int, colours: list[str] | None = None
) -> dict[str, bytes]:
    """{"<class folder>/<file>": JPEG bytes}; `colours` names the class each folder looks like."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, cls in enumerate(classes):
        colour = class_colour((colours or classes)[i])
        for j in range(per_class):
            out[f"{cls}/{cls}_{j:04d}.JPEG"] = image_bytes(rng, colour, size)
    return out


def write_folder(root: Path, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_archive(path: Path, kind: str, files: Mapping[str, bytes]) -> Path:
    """Pack {member: bytes} as a `kind` archive at `path`, folders as their own members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    members = sorted(files)
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for member in members:
                zf.writestr(member, files[member])
        return path
    with tarfile.open(path, "w:gz" if kind == "tar.gz" else "w") as tf:
        for member in members:
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(files[member]), 0, 0o644
            tf.addfile(info, io.BytesIO(files[member]))
    return path


def _roles(config: Mapping[str, Any]) -> dict[str, str]:
    vision = config.get("vision", {})
    roles = {name: "ood" for name in vision.get("ood_detection", {}).get("ood_datasets", [])}
    for name in vision.get("ood_generalization", {}).get("test_datasets", []):
        roles[name] = "shifted"
    return roles


def imagefolder_files(
    name: str, spec: Mapping[str, Any], role: str, per_class: int, size: int, seed: int
) -> dict[str, bytes]:
    """The class folders of dataset `name` as {"<class>/<file>": bytes}."""
    wnids = sorted(WNIDS)
    if "index_labels_from" in spec:
        return folder_files([str(i) for i in range(len(wnids))], per_class, seed, size, wnids)
    if role == "shifted":
        return folder_files(wnids[: CLASS_SUBSETS.get(name, len(wnids))], per_class, seed, size)
    if role == "ood":
        classes = [f"{name}_class{i}" for i in range(OOD_CLASSES)]
        return folder_files(classes, per_class, seed, size)
    return folder_files(wnids, per_class, seed, size)


def build_imagefolders(
    config: Mapping[str, Any], files: Path, workdir: Path, sizes: Mapping[str, int], size: int
) -> list[str]:
    """Every `imagefolder` dataset of `config`: archives under `files`, local ones under
    `workdir`. sizes: images per class, by dataset name (key "default" for the rest)."""
    roles = _roles(config)
    done = []
    for i, (name, spec) in enumerate(sorted(config["datasets"].items())):
        if spec.get("source") != "imagefolder":
            continue
        per_class = sizes.get(name, sizes["default"])
        content = imagefolder_files(name, spec, roles.get(name, "id"), per_class, size, seed=i)
        root = PurePosixPath(spec["root"])
        if "download" in spec:
            inner = root.relative_to(PurePosixPath("data") / name)
            members = {f"{inner}/{rel}": data for rel, data in content.items()}
            url = spec["download"]["url"]
            write_archive(url_path(files, url), archive_kind(url), members)
        else:
            write_folder(workdir / root, content)
        done.append(name)
    return done


def caption(rng: np.random.Generator, category: str) -> str:
    return f"a {rng.choice(COLOURS)} {category} {rng.choice(PLACES)}"


def coco_files(n_train: int, n_val: int, size: int, seed: int) -> tuple[dict, dict]:
    """({member: bytes} of annotations_trainval2017.zip, {split: {member: bytes} of its images
    archive}): captions (five per image) and instances for train2017 and val2017, and each
    split's {split}/<id>.jpg images (train2017.zip, val2017.zip)."""
    rng = np.random.default_rng(seed)
    categories = [
        {"id": i + 1, "name": n, "supercategory": s} for i, (n, s) in enumerate(COCO_CATEGORIES)
    ]
    annotations: dict[str, bytes] = {}
    images: dict[str, dict[str, bytes]] = {}
    ann_id = 0
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        caps, insts, infos, files = [], [], [], {}
        for k in range(n):
            image_id = 100000 * (split == "val2017") + k + 1
            cat = categories[k % len(categories)]
            file_name = f"{image_id:012d}.jpg"
            infos.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
            for _ in range(5):
                ann_id += 1
                caps.append(
                    {"id": ann_id, "image_id": image_id, "caption": caption(rng, cat["name"])}
                )
            insts.append(
                {"id": ann_id, "image_id": image_id, "category_id": cat["id"], "bbox": [0, 0, 1, 1]}
            )
            files[f"{split}/{file_name}"] = image_bytes(rng, class_colour(cat["name"]), size)
        annotations[f"annotations/captions_{split}.json"] = json.dumps(
            {"images": infos, "annotations": caps}
        ).encode()
        annotations[f"annotations/instances_{split}.json"] = json.dumps(
            {"images": infos, "annotations": insts, "categories": categories}
        ).encode()
        images[split] = files
    return annotations, images


def caption_words() -> list[str]:
    """Every word a miniature COCO caption uses (the tiny LLaVA's vocabulary)."""
    words = [n for n, _ in COCO_CATEGORIES] + COLOURS + [w for p in PLACES for w in p.split()]
    return sorted(set(words) | {"a"})


def wordnet_files() -> tuple[bytes, bytes]:
    """(wordnet.is_a.txt, words.txt) over the miniature's wnids and their hypernyms."""
    is_a = "".join(f"{parent} {child}\n" for parent, child in IS_A)
    words = "".join(f"{wnid}\t{name}\n" for wnid, name in sorted({**INNER, **WNIDS}.items()))
    return is_a.encode(), words.encode()
