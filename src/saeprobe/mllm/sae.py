"""One SAE per layer on the image+text token mixture, and its cross-modal evaluation.

Each modality's rows are divided by that modality's mean L2 norm on the training extraction
(`modality_scale.json` next to the SAE records both factors) before training and before
evaluation, so image and text tokens enter the SAE at the same average norm; the SAE trainer
then applies its single unit-mean-squared-norm scale as for any other site.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.eval import crossmodal as cm
from saeprobe.io import atomic_save_npy, atomic_write_csv, atomic_write_json
from saeprobe.mllm.data import concept_sets
from saeprobe.mllm.extract import load_extraction
from saeprobe.sae import ArraySource, SAEConfig, TrainConfig, load_sae, train_sweep

log = logging.getLogger(__name__)

SCALE_FILE = "modality_scale.json"


def train_mixture_sae(
    train_dir: str | Path,
    eval_dir: str | Path,
    layer: int,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    seed: int = 0,
    device: str = "cpu",
    normalize: bool = True,
) -> None:
    """Train one SAE on layer `layer` of the training extraction (both modalities mixed)."""
    out_dir = Path(out_dir)
    acts, tokens, _, meta = load_extraction(train_dir, layer)
    scales = cm.modality_scales(tokens, acts) if normalize else {"image": 1.0, "text": 1.0}
    log.info("layer %d: modality mean norms %s (normalise=%s)", layer, scales, normalize)
    x = cm.normalised(acts, tokens, scales)
    e_acts, e_tokens, _, _ = load_extraction(eval_dir, layer)
    held = cm.normalised(e_acts, e_tokens, scales)
    spec = {
        "model": meta.get("model"),
        "dataset": meta.get("dataset"),
        "layer": layer,
        "rows": len(x),
        "modality_scale": scales,
    }
    train_sweep(
        ArraySource(x, name=f"{train_dir}/L{layer}"),
        [sae_cfg],
        train_cfg,
        [out_dir],
        device=device,
        seed=seed,
        eval_source=ArraySource(held, name=f"{eval_dir}/L{layer}"),
        activation_spec=spec,
    )
    atomic_write_json(out_dir / SCALE_FILE, {"normalize": normalize, **scales})


def _code_chunks(
    sae: Any, x: np.ndarray, chunk: int = 4096
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    for i in range(0, len(x), chunk):
        rows = np.arange(i, min(i + chunk, len(x)))
        with torch.no_grad():
            codes = sae.encode(torch.from_numpy(np.ascontiguousarray(x[rows])))
        yield codes, rows


def evaluate_crossmodal(
    sae_dir: str | Path,
    eval_dir: str | Path,
    layer: int,
    out_dir: str | Path,
    top_m: int = 5,
    n_null: int = 1000,
    min_count: int = 5,
    fire_threshold: float = 1e-3,
    n_shared_examples: int = 4,
    seed: int = 0,
) -> pd.DataFrame:
    """Cross-modal statistics of one SAE on the evaluation extraction; writes into `out_dir`:
    `latents.csv` (per latent), `concepts.csv` (per concept), `summary.csv` (metric, value,
    null_value, null_lo, null_hi, p_value, concept), `shared.json` (examples of shared latents:
    top images and words) and `thumbnails.npy` (the images `shared.json` refers to).
    Returns the summary + per-concept rows (metric, value, null_value, concept, ...)."""
    sae_dir, out_dir = Path(sae_dir), Path(out_dir)
    sae = load_sae(sae_dir)
    scales = json.loads((sae_dir / SCALE_FILE).read_text())
    acts, tokens, examples, meta = load_extraction(eval_dir, layer)
    x = cm.normalised(acts, tokens, scales)
    attributes: dict[str, str] = meta["attributes"]
    concepts = sorted(attributes)
    sums = cm.accumulate(
        _code_chunks(sae, x), tokens, concept_sets(examples), concepts, sae.cfg.width
    )
    latents = cm.latent_table(sums, fire_threshold)
    rows: list[dict[str, Any]] = [
        {**r, "concept": ""} for r in cm.summary_rows(latents, fire_threshold)
    ]
    per_concept, summary = cm.concept_matching(sums, attributes, top_m, n_null, min_count, seed)
    rows += [{**r, "concept": ""} for r in summary]
    for r in per_concept.to_dict("records"):
        rows.append(
            {
                "metric": "concept_overlap",
                "value": r["overlap"],
                "null_value": r["null_value"],
                "null_lo": r["null_lo"],
                "null_hi": r["null_hi"],
                "concept": r["concept"],
                "attribute": r["attribute"],
            }
        )
        rows.append(
            {
                "metric": "concept_top1_shared",
                "value": r["top1_shared"],
                "null_value": r["top1_null"],
                "concept": r["concept"],
                "attribute": r["attribute"],
            }
        )
    table = pd.DataFrame(rows)
    # examples of shared latents: the top image latents of matched concepts that also fire on text
    shared = latents.set_index("latent")["shared"]
    picks: list[int] = []
    if len(per_concept):
        ranked = per_concept.sort_values(["overlap", "concept"], ascending=[False, True])
        for latent in ranked["img_latent"]:
            if shared.get(latent, False) and latent not in picks:
                picks.append(int(latent))
    if len(picks) < n_shared_examples:
        score = latents[latents["shared"]].assign(
            m=lambda f: np.minimum(f["mass_img"], f["mass_txt"])
        )
        for latent in score.sort_values("m", ascending=False)["latent"]:
            if latent not in picks:
                picks.append(int(latent))
    picks = picks[:n_shared_examples]
    shared_info = cm.shared_examples(sums, picks)
    thumbs = np.load(Path(eval_dir) / "thumbnails.npy", mmap_mode="r")
    used = sorted({e for s in shared_info for e in s["examples"]})
    for s in shared_info:
        s["thumb_rows"] = [used.index(e) for e in s["examples"]]
        s["captions"] = [str(examples.loc[e, "caption"]) for e in s["examples"]]
        concept_of = per_concept[per_concept["img_latent"] == s["latent"]]["concept"]
        s["concepts"] = list(concept_of)
    atomic_save_npy(out_dir / "thumbnails.npy", np.asarray(thumbs[used]))
    atomic_write_json(out_dir / "shared.json", shared_info)
    atomic_write_csv(out_dir / "latents.csv", latents)
    atomic_write_csv(out_dir / "concepts.csv", per_concept)
    atomic_write_csv(out_dir / "summary.csv", table)
    log.info("layer %d: %s", layer, table[table["concept"] == ""].to_string())
    return table
