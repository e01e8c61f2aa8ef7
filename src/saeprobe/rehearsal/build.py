"""Build the miniature hub the rehearsal overlay points the paper config at.

    python -m saeprobe.rehearsal.build WORKDIR configs/paper.yaml configs/rehearsal.yaml

Reads the configs as snakemake merges them (later files win, mappings merged key by key) and
writes, relative to WORKDIR (snakemake's `--directory`): each hub model at the path its `name`
gives, ImageNet and the local-only datasets at their `root`, and under `WORKDIR/hub/files/`
every file a URL of the config names on the loopback hub (served by
`python -m saeprobe.rehearsal.serve WORKDIR/hub/files`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from saeprobe.rehearsal import datasets, models

log = logging.getLogger(__name__)

FILES = "hub/files"
HUB_HOSTS = ("127.0.0.1", "localhost")
# images per class, per dataset (the ImageNet splits feed the probes and the SAEs)
IMAGES_PER_CLASS = {"imagenet_train": 8, "imagenet_val": 4, "default": 3}
COCO_TRAIN_IMAGES = 48
COCO_VAL_IMAGES = 96


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's config merge: mappings merged recursively, anything else replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_configs(paths: list[Path]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for path in paths:
        config = merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def on_hub(url: str) -> bool:
    return urlparse(url).hostname in HUB_HOSTS


def local_model_dir(workdir: Path, key: str, name: str) -> Path:
    """The folder a hub model's `name` names (open_clip's `local-dir:` prefix dropped)."""
    path = Path(name.removeprefix("local-dir:"))
    if path.is_absolute() or not name.startswith(("local-dir:", "hub/")):
        raise ValueError(
            f"config key '{key}': the rehearsal builds hub models under hub/ (a path relative "
            f"to the run's directory, open_clip's with 'local-dir:'), got {name!r}"
        )
    return workdir / path


def build_models(config: Mapping[str, Any], workdir: Path) -> list[str]:
    """Every hub model of `config` (and the diffusion scorer) at the folder its name gives."""
    specs = {f"models.{k}": v for k, v in config.get("models", {}).items()}
    scorer = config.get("diffusion", {}).get("scorer")
    if scorer and scorer.get("source") == "open_clip":
        specs["diffusion.scorer"] = scorer
    built: dict[Path, str] = {}
    for key, spec in specs.items():
        source = spec.get("source")
        if source not in ("open_clip", "hf", "diffusers", "llava"):
            continue
        out = local_model_dir(workdir, f"{key}.name", spec["name"])
        if out in built:
            continue
        if source == "open_clip":
            models.save_open_clip(out)
        elif source == "hf":
            models.save_dinov2(out)
        elif source == "diffusers":
            models.save_stable_diffusion(out)
        else:
            models.save_llava(out, datasets.caption_words())
        built[out] = key
        log.info("%s: %s model at %s", key, source, out)
    return list(built.values())


def build_files(config: Mapping[str, Any], workdir: Path) -> None:
    """The datasets, WordNet and COCO files `config` names, on the hub or in place."""
    files = workdir / FILES
    for name, spec in config["datasets"].items():
        url = spec.get("download", {}).get("url")
        if url and not on_hub(url):
            raise ValueError(
                f"config key 'datasets.{name}.download.url': expected a URL on the loopback hub "
                f"(http://127.0.0.1:<port>/...), got {url}"
            )
    size = models.IMAGE_SIZE
    names = datasets.build_imagefolders(config, files, workdir, IMAGES_PER_CLASS, size)
    log.info("image folders: %s", ", ".join(names))
    hierarchy = config.get("vision", {}).get("hierarchy", {})
    if hierarchy.get("source") == "wordnet":
        is_a, words = datasets.wordnet_files()
        for key, data in (("is_a", is_a), ("words", words)):
            path = datasets.url_path(files, hierarchy[key]["url"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    annotations, images = datasets.coco_files(COCO_TRAIN_IMAGES, COCO_VAL_IMAGES, size, seed=0)
    urls = {
        spec["download"]["url"]
        for spec in config["datasets"].values()
        if spec.get("source") == "prompts" and "download" in spec
    }
    coco = config.get("mllm", {}).get("coco", {})
    if "annotations_url" in coco:
        urls.add(coco["annotations_url"])
    for url in sorted(urls):
        datasets.write_archive(datasets.url_path(files, url), "zip", annotations)
    for split, url in coco.get("images_urls", {}).items():
        datasets.write_archive(datasets.url_path(files, url), "zip", images[split])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="the run's directory (snakemake --directory)")
    parser.add_argument("configs", type=Path, nargs="+", help="the paper config, then overlays")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_configs(args.configs)
    args.workdir.mkdir(parents=True, exist_ok=True)
    build_models(config, args.workdir)
    build_files(config, args.workdir)
    log.info("hub built in %s; serve %s", args.workdir, args.workdir / FILES)


if __name__ == "__main__":
    main()
