"""Prompt corpora for text encoders: captions of the synthetic world, or a downloaded corpus.

A prompt dataset spec (`datasets:` entry):
* `{source: world_captions, root, split, n_prompts, captions: {caption_*_p}}`: `n_prompts`
  captions of the split's images (drawn with replacement, seeded) in the phrasings the world's
  models train on (saeprobe.world.clip.CaptionSampler);
* `{source: prompts, path, column, member?, n_prompts}`: up to `n_prompts` distinct prompts (a
  seeded sample) from a .csv/.tsv/.parquet column or a JSON file inside a zip (COCO captions).
Either may carry `holdout: {fraction, part}`: a seeded `fraction` of the prompts is the
`heldout` part, the rest the `train` part, so two datasets split one corpus disjointly.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.world.generate import load_split

CAPTION_KEYS = (
    "caption_colour_p",
    "caption_background_p",
    "caption_superclass_p",
    "caption_generic_p",
    "caption_photo_p",
)


def world_captions(
    manifest: pd.DataFrame, n: int, seed: int, probabilities: Mapping[str, float]
) -> list[str]:
    """`n` captions of the manifest's images (drawn with replacement, seeded).

    probabilities: the CaptionSampler's caption_*_p keys (which parts a caption mentions).
    """
    from saeprobe.world.clip import CaptionSampler
    from saeprobe.world.config import WorldClipConfig

    texts: list[str] = []

    def index_tokenizer(captions: list[str]) -> torch.Tensor:
        texts.extend(captions)
        return torch.stack([torch.arange(1, len(captions) + 1), torch.zeros(len(captions))], 1)

    cfg = WorldClipConfig.from_dict({k: probabilities[k] for k in CAPTION_KEYS})
    sampler = CaptionSampler(cfg, index_tokenizer, manifest)
    rng = np.random.default_rng([seed, 3])
    index = rng.choice(len(manifest), n, replace=True)
    rows = sampler.sample(index, rng)[:, 0].long() - 1
    return [texts[i] for i in rows.tolist()]


def corpus_prompts(
    path: str | Path, column: str, member: str | None, max_prompts: int, seed: int
) -> list[str]:
    """Up to `max_prompts` distinct prompts (a seeded sample) from a downloaded corpus.

    path: .csv, .tsv, .parquet (prompts in `column`), or .zip holding the JSON file `member`
    whose list `annotations` has the prompts under `column` (COCO captions).
    """
    path = Path(path)
    if path.suffix == ".zip":
        if not member:
            raise ValueError(f"{path}: a zip corpus needs 'member' (the JSON file inside)")
        with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
            data = json.load(fh)
        prompts = [a[column] for a in data["annotations"]]
    elif path.suffix == ".parquet":
        prompts = pd.read_parquet(path, columns=[column])[column].tolist()
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        prompts = pd.read_csv(path, sep=sep)[column].tolist()
    prompts = sorted(
        {" ".join(str(p).split()) for p in prompts if isinstance(p, str) and p.strip()}
    )
    rng = np.random.default_rng([seed, 4])
    if len(prompts) > max_prompts:
        prompts = [
            prompts[i] for i in np.sort(rng.choice(len(prompts), max_prompts, replace=False))
        ]
    return prompts


def heldout_mask(n_prompts: int, fraction: float, seed: int) -> np.ndarray:
    """(n_prompts,) bool: the prompt is among a seeded `fraction` held out."""
    return np.random.default_rng([seed, 5]).random(n_prompts) < fraction


def load_prompts(spec: Mapping, seed: int) -> list[str]:
    """The prompts a dataset spec names (see the module docstring)."""
    source = spec["source"]
    if source == "world_captions":
        _, manifest = load_split(spec["root"], spec["split"], mmap=True)
        prompts = world_captions(manifest, spec["n_prompts"], seed, spec["captions"])
    elif source == "prompts":
        prompts = corpus_prompts(
            spec["path"], spec["column"], spec.get("member"), spec["n_prompts"], seed
        )
    else:
        raise ValueError(
            f"prompt dataset source: expected world_captions or prompts, got {source!r}"
        )
    holdout = spec.get("holdout")
    if not holdout:
        return prompts
    held = heldout_mask(len(prompts), holdout["fraction"], seed)
    keep = held if holdout["part"] == "heldout" else ~held
    return [p for p, k in zip(prompts, keep, strict=True) if k]
