"""Prompt corpora and text-encoder activations for SAE training.

World: captions re-drawn from the train split's attributes with the phrasings the world's
models train on (saeprobe.world.clip.CaptionSampler: colour, shape or superclass, background,
"a photo of"), one per image in a seeded draw. Paper: a downloaded caption corpus (COCO captions
by default; CSV/TSV/parquet column or a JSON file inside a zip).

Site directory (`results/activations/{model}/{corpus}/{site}`, site = `L{layer}_{tokens}`):
`train.npy` (n_train, d) float32 and `heldout.npy` (n_heldout, d) (prompts split 90/10),
`tokens.csv` (split, prompt, position, token_id, token: one row per activation row, train rows
first) and `metadata.json` (model, layer, tokens, d, counts).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from saeprobe.diffusion.hooks import Tokens, capture, token_mask
from saeprobe.diffusion.pipeline import tokenize_prompts
from saeprobe.io import atomic_save_npy, atomic_write_csv, atomic_write_json
from saeprobe.world.clip import CaptionSampler
from saeprobe.world.config import WorldClipConfig

CAPTION_KEYS = (
    "caption_colour_p",
    "caption_background_p",
    "caption_superclass_p",
    "caption_generic_p",
    "caption_photo_p",
)


def world_captions(
    manifest: pd.DataFrame, n: int, seed: int, probabilities: dict[str, float]
) -> list[str]:
    """`n` captions of train images (drawn with replacement, seeded) in the world's phrasings.

    probabilities: the CaptionSampler's caption_*_p keys (which parts a caption mentions).
    """
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


def load_prompt_corpus(
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


@torch.no_grad()
def collect(
    pipe: Any,
    prompts: Sequence[str],
    layers: Sequence[int],
    tokens: Tokens,
    batch_size: int = 256,
) -> tuple[dict[int, np.ndarray], pd.DataFrame]:
    """Residual-stream activations at the chosen tokens of every prompt.

    Returns ({layer: float32 (rows, d)}, token table with columns prompt, position, token_id,
    token: one row per activation row, in the same order).
    """
    acts: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    rows = []
    encoder = pipe.text_encoder
    for start in tqdm(range(0, len(prompts), batch_size), desc="text activations", mininterval=5):
        batch = list(prompts[start : start + batch_size])
        ids, am = tokenize_prompts(pipe, batch)
        mask = token_mask(am, tokens)
        with capture(encoder, layers) as store:
            encoder(input_ids=ids.to(encoder.device))
        for layer in layers:
            acts[layer].append(store[layer][mask.to(store[layer].device)].float().cpu().numpy())
        where = mask.nonzero().numpy()
        token_ids = ids[mask].numpy()
        words = pipe.tokenizer.convert_ids_to_tokens(token_ids.tolist())
        rows.append(
            pd.DataFrame(
                {
                    "prompt": where[:, 0] + start,
                    "position": where[:, 1],
                    "token_id": token_ids,
                    "token": words,
                }
            )
        )
    table = pd.concat(rows, ignore_index=True)
    return {layer: np.concatenate(a) for layer, a in acts.items()}, table


def write_site(
    site_dir: str | Path,
    acts: np.ndarray,
    table: pd.DataFrame,
    heldout: np.ndarray,
    metadata: dict[str, Any],
) -> None:
    """Write one site: train.npy / heldout.npy (rows by `heldout`, a bool per row), tokens.csv,
    metadata.json (written last: its presence marks a complete site)."""
    site_dir = Path(site_dir)
    order = np.concatenate([np.flatnonzero(~heldout), np.flatnonzero(heldout)])
    atomic_save_npy(site_dir / "train.npy", acts[~heldout])
    atomic_save_npy(site_dir / "heldout.npy", acts[heldout])
    out = table.iloc[order].assign(split=np.where(heldout[order], "heldout", "train"))
    atomic_write_csv(site_dir / "tokens.csv", out.reset_index(drop=True))
    meta = {
        **metadata,
        "d": int(acts.shape[1]),
        "n_train": int((~heldout).sum()),
        "n_heldout": int(heldout.sum()),
    }
    atomic_write_json(site_dir / "metadata.json", meta)


def heldout_rows(table: pd.DataFrame, n_prompts: int, fraction: float, seed: int) -> np.ndarray:
    """Bool per activation row: its prompt is among a seeded `fraction` of the prompts."""
    rng = np.random.default_rng([seed, 5])
    held = rng.random(n_prompts) < fraction
    return held[table["prompt"].to_numpy()]
