"""Train the sweep of one activation site, for any model family, and record it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from saeprobe.activations import ActivationStore
from saeprobe.io import atomic_write_json
from saeprobe.sae.config import SAEConfig, TrainConfig
from saeprobe.sae.io import METRICS, read_json
from saeprobe.sae.sources import StoreSource
from saeprobe.sae.trainer import StepCallback, train_sweep

MODALITY_SCALE = "modality_scale.json"


def train_site(
    train: str | Path,
    held_out: str | Path,
    saes: Mapping[str, str | Path],
    sweep: Mapping[str, Mapping[str, Any]],
    train_settings: Mapping[str, Any],
    marker: str | Path,
    *,
    normalize_modalities: bool = False,
    seed: int = 0,
    device: str | torch.device = "auto",
    export_saelens: bool = False,
    callback: StepCallback | None = None,
) -> dict[str, Any]:
    """Train every SAE of `sweep` on one site from one stream of batches, then write `marker`.

    train / held_out: activation-store site directories; saes: {sae name: output directory};
    sweep: {sae name: SAEConfig keys}; train_settings: TrainConfig keys.
    normalize_modalities: divide each row by its modality's mean norm on the training store;
    a multimodal site's SAEs record the scales in `modality_scale.json`. The marker (JSON:
    site, SAEs, their held-out metrics) is written last: it exists once the sweep is complete.
    Finished SAEs and checkpoints are reused only when both stores' content keys match (an
    extraction rerun on changed inputs trains from scratch). callback: see `train_sweep`.
    """
    train_store, eval_store = ActivationStore(train), ActivationStore(held_out)
    scales = train_store.modality_norms() if normalize_modalities else None
    source = StoreSource(train_store, None if scales is None else train_store.row_divisors(scales))
    eval_source = StoreSource(
        eval_store, None if scales is None else eval_store.row_divisors(scales)
    )
    names = sorted(saes)
    train_sweep(
        source,
        [SAEConfig.from_dict({**sweep[name], "name": name}) for name in names],
        TrainConfig.from_dict(dict(train_settings)),
        [saes[name] for name in names],
        device=device,
        seed=seed,
        eval_source=eval_source,
        export_saelens=export_saelens,
        data_key=f"{train_store.content_key()}/{eval_store.content_key()}",
        callback=callback,
    )
    if "modality" in train_store.metadata["columns"]:
        record_scales = scales or {"image": 1.0, "text": 1.0}
        for name in names:
            atomic_write_json(
                Path(saes[name]) / MODALITY_SCALE,
                {"normalize": scales is not None, **record_scales},
            )
    record = {
        "site": train_store.site,
        "train": str(train),
        "held_out": str(held_out),
        "saes": {name: str(saes[name]) for name in names},
        "metrics": {name: read_json(Path(saes[name]) / METRICS) for name in names},
    }
    atomic_write_json(marker, record)
    return record
