"""Residual-stream activations of a LLaVA model on image tokens and caption tokens.

One teacher-forced forward of `PROMPT + " " + caption` with the image per example
(`output_hidden_states=True`); the residual stream after language-model block L is
`hidden_states[L + 1]`. Kept positions: the image tokens (input_ids == image_token_id; at most
`max_image_tokens` per example, a seeded subset) and the caption's tokens (the tokens after the
prompt's own tokenisation). Output directory:

* `L{layer}.npy`: (rows, d) activations, float32 or float16, one file per layer, same row order;
* `tokens.csv`: one row per activation row: example, modality (image | text), position (index in
  the unpadded sequence), token_id, word (the token's text, lower-cased, without the
  tokenizer's word-start marker; empty for image tokens);
* `examples.csv`: the examples (saeprobe.mllm.data.Examples.table);
* `thumbnails.npy`: uint8 (n_examples, 64, 64, 3) for the figures;
* `metadata.json`: model, dataset, layers, counts per modality, mean norm per modality and
  layer, d_model, dtype, the concept -> attribute map.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from saeprobe.io import atomic_save_npy, atomic_write_csv, atomic_write_json
from saeprobe.mllm.data import PROMPT, Examples

log = logging.getLogger(__name__)

TOKEN_COLUMNS = ("example", "modality", "position", "token_id", "word")
WORD_MARKERS = "\u2581\u0120"  # sentencepiece and byte-level BPE word-start markers


def clean_word(token: str) -> str:
    return token.strip().lstrip(WORD_MARKERS).strip().lower()


@torch.no_grad()
def extract_tokens(
    model: Any,
    processor: Any,
    examples: Examples,
    layers: list[int],
    batch_size: int = 32,
    max_image_tokens: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
) -> tuple[dict[int, np.ndarray], pd.DataFrame]:
    """({layer: (rows, d) array}, token table with TOKEN_COLUMNS) for every example."""
    device = next(model.parameters()).device
    model_dtype = next(model.parameters()).dtype
    image_token_id = int(model.config.image_token_id)
    tokenizer = processor.tokenizer
    n_layers = model.config.text_config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the language model has {n_layers} blocks")
    rng = np.random.default_rng(seed)
    prompt_ids: list[int] | None = None
    acts: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    rows: list[dict[str, Any]] = []
    table = examples.table
    for s in tqdm(range(0, len(table), batch_size), desc="extract", mininterval=5.0):
        part = table.iloc[s : s + batch_size]
        images = [examples.image(int(i)) for i in part["example"]]
        if prompt_ids is None:
            prompt_ids = processor(images=images[:1], text=[PROMPT])["input_ids"][0]
            prompt_ids = [int(t) for t in prompt_ids]
        texts = [f"{PROMPT} {c}" for c in part["caption"]]
        batch = processor(images=images, text=texts, padding=True, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(model_dtype)
        out = model(**batch, output_hidden_states=True)
        ids = batch["input_ids"].cpu()
        mask = batch["attention_mask"].cpu().bool()
        keep_rows, keep_cols = [], []
        for r, example in enumerate(part["example"]):
            real = mask[r].nonzero()[:, 0]
            seq = ids[r, real].tolist()
            if seq[: len(prompt_ids)] != prompt_ids:
                raise ValueError(
                    f"example {example}: the prompt's tokens are not a prefix of the tokenised "
                    f"prompt + caption; cannot locate the caption tokens"
                )
            img = [i for i, t in enumerate(seq) if t == image_token_id]
            if max_image_tokens is not None and len(img) > max_image_tokens:
                img = sorted(rng.choice(img, max_image_tokens, replace=False).tolist())
            txt = list(range(len(prompt_ids), len(seq)))
            words = tokenizer.convert_ids_to_tokens([seq[i] for i in txt])
            for i in img:
                rows.append(
                    dict(example=int(example), modality="image", position=i, token_id=seq[i])
                )
            for i, w in zip(txt, words, strict=True):
                rows.append(
                    dict(
                        example=int(example),
                        modality="text",
                        position=i,
                        token_id=seq[i],
                        word=clean_word(w),
                    )
                )
            cols = [int(real[i]) for i in img + txt]
            keep_rows += [r] * len(cols)
            keep_cols += cols
        rr, cc = torch.tensor(keep_rows), torch.tensor(keep_cols)
        for layer in layers:
            h = out.hidden_states[layer + 1][rr.to(device), cc.to(device)]
            acts[layer].append(h.float().cpu().numpy().astype(dtype))
    frame = pd.DataFrame(rows, columns=list(TOKEN_COLUMNS))
    frame["word"] = frame["word"].fillna("")
    return {layer: np.concatenate(a) for layer, a in acts.items()}, frame


def write_extraction(
    out_dir: str | Path,
    acts: dict[int, np.ndarray],
    tokens: pd.DataFrame,
    examples: Examples,
    info: dict[str, Any],
) -> None:
    """Write the extraction layout described in the module docstring into `out_dir`."""
    out_dir = Path(out_dir)
    is_img = (tokens["modality"] == "image").to_numpy()
    norms = {}
    for layer, a in acts.items():
        n = np.linalg.norm(a.astype(np.float64), axis=1)
        norms[f"L{layer}"] = {"image": float(n[is_img].mean()), "text": float(n[~is_img].mean())}
        atomic_save_npy(out_dir / f"L{layer}.npy", a)
    atomic_write_csv(out_dir / "tokens.csv", tokens)
    atomic_write_csv(out_dir / "examples.csv", examples.table)
    thumbs = np.stack([examples.thumbnail(i) for i in range(len(examples))])
    atomic_save_npy(out_dir / "thumbnails.npy", thumbs)
    meta = {
        **info,
        "layers": sorted(acts),
        "d_model": int(next(iter(acts.values())).shape[1]),
        "rows": len(tokens),
        "rows_image": int(is_img.sum()),
        "rows_text": int((~is_img).sum()),
        "n_examples": len(examples),
        "mean_norm": norms,
        "attributes": examples.attributes,
    }
    atomic_write_json(out_dir / "metadata.json", meta)


def load_extraction(
    act_dir: str | Path, layer: int
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(activations (rows, d) memory-mapped, tokens, examples, metadata) of one layer."""
    import json

    act_dir = Path(act_dir)
    meta = json.loads((act_dir / "metadata.json").read_text())
    acts = np.load(act_dir / f"L{layer}.npy", mmap_mode="r")
    tokens = pd.read_csv(act_dir / "tokens.csv", keep_default_na=False)
    examples = pd.read_csv(act_dir / "examples.csv", keep_default_na=False)
    return acts, tokens, examples, meta
