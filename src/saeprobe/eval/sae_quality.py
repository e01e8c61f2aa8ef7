"""One row of `sae_quality.csv` per SAE: reconstruction metrics and downstream accuracy."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.activations import ActivationStore
from saeprobe.io import atomic_write_csv
from saeprobe.sae import downstream_recovered, load_sae, reconstruct
from saeprobe.sae.io import METRICS, read_json

log = logging.getLogger(__name__)

COLUMNS = [
    "sae",
    "model",
    "layer",
    "site",
    "arch",
    "width",
    "k",
    "l1",
    "l0",
    "nmse",
    "explained_variance",
    "cos_sim",
    "dead_frac",
    "dense_frac",
    "downstream_recovered",
    "acc_clean",
    "acc_sae",
    "acc_ablated",
    "n_inputs",
]


def parse_site(site: str) -> tuple[int | None, str | None]:
    """`L{layer}_{tokens}` -> (layer, tokens); `pooled` -> (None, None)."""
    if site == "pooled":
        return None, None
    match = re.fullmatch(r"L(\d+)_([A-Za-z0-9-]+)", site)
    if match is None:
        raise ValueError(f"site {site!r}: expected L<layer>_<tokens> or pooled")
    return int(match.group(1)), match.group(2)


def downstream_accuracies(
    saes: Mapping[str, Any],
    model_spec: Mapping,
    dataset_spec: Mapping,
    site: str,
    ablation_mean: np.ndarray,
    class_names: Mapping[str, str],
    device: torch.device,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Zero-shot accuracy clean, with each SAE spliced in at `site`, and with the site ablated.

    saes: name -> SAE; ablation_mean: (d,) mean activation of the site on the SAEs' training
    data; class_names maps each dataset label to the word put into the prompt. Returns
    {"clean": acc, "ablated": acc, <sae name>: acc, ...}; one pass over the images.
    """
    from saeprobe.backbones.openclip import OpenClipBackbone, load_open_clip_model
    from saeprobe.data import load_dataset
    from saeprobe.eval.downstream import text_classifier, zero_shot_accuracies

    layer, tokens = parse_site(site)
    model, tokenizer = load_open_clip_model(model_spec, device)
    backbone = OpenClipBackbone(model, model_spec, device, precision="fp32")
    dataset = load_dataset(dataset_spec, backbone.preprocess_params, seed=seed)
    labels = dataset.labels()
    classes = sorted(set(labels))
    classifier = text_classifier(model, tokenizer, [class_names.get(c, c) for c in classes])
    index = {c: i for i, c in enumerate(classes)}
    targets = np.array([index[label] for label in labels], dtype=np.int64)
    mean = torch.as_tensor(ablation_mean, dtype=torch.float32, device=device)

    def spliced(sae: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: reconstruct(sae, x.float()).to(x.dtype)

    replacements: dict[str, Callable | None] = {
        "clean": None,
        "ablated": lambda x: mean.to(x.dtype).expand_as(x),
    }
    replacements.update({name: spliced(sae.to(device)) for name, sae in saes.items()})
    return zero_shot_accuracies(
        backbone, dataset, classifier, targets, layer, tokens, replacements, batch_size=batch_size
    )


def site_quality(
    sae_dirs: Sequence[str | Path],
    model: str,
    site: str,
    train: str | Path | None,
    model_spec: Mapping,
    dataset_spec: Mapping | None,
    class_names: Mapping[str, str] | None,
    device: torch.device,
    batch_size: int = 256,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per SAE of one site of `model`, on held-out data.

    Reconstruction metrics are the held-out ones the trainer wrote to each `metrics.json`;
    train: the activation-store site directory of the training set (its mean is the ablation;
    needed only for downstream accuracy).
    Downstream accuracy is measured when `dataset_spec` and `class_names` are given, the model
    has a text tower and the site can be spliced back; otherwise those columns are NaN.
    """
    from saeprobe.eval.downstream import has_text_tower

    dirs = [Path(d) for d in sae_dirs]
    layer, tokens = parse_site(site)
    saes = {}
    for d in dirs:
        sae = load_sae(d, device)
        saes[sae.cfg.name] = sae
    nan = float("nan")
    accs: dict[str, float] = {"clean": nan, "ablated": nan}
    spliceable = tokens is None or tokens in ("cls", "patches", "all")
    downstream = dataset_spec is not None and class_names and train is not None
    if downstream and has_text_tower(model_spec) and spliceable:
        accs = downstream_accuracies(
            saes,
            model_spec,
            dataset_spec,
            site,
            ActivationStore(train).mean,
            class_names,
            device,
            batch_size,
            seed,
        )
    rows = []
    for d, (name, sae) in zip(dirs, saes.items(), strict=True):
        metrics = read_json(Path(d) / METRICS)
        cfg = sae.cfg
        arch = cfg.arch if cfg.arch != "matryoshka" else f"matryoshka-{cfg.matryoshka_base}"
        acc_sae = accs.get(name, nan)
        rows.append(
            {
                "sae": f"{model}/{site}/{name}",
                "model": model,
                "layer": "pooled" if layer is None else layer,
                "site": site,
                "arch": arch,
                "width": sae.width,
                "k": cfg.k if cfg.arch in ("topk", "batchtopk", "matryoshka") else None,
                "l1": cfg.l1 if cfg.arch == "relu" else None,
                "l0": metrics["l0"],
                "nmse": metrics["nmse"],
                "explained_variance": metrics["explained_variance"],
                "cos_sim": metrics["cos_sim"],
                "dead_frac": metrics["dead_frac"],
                "dense_frac": metrics["dense_frac"],
                "downstream_recovered": downstream_recovered(
                    accs["clean"], acc_sae, accs["ablated"]
                ),
                "acc_clean": accs["clean"],
                "acc_sae": acc_sae,
                "acc_ablated": accs["ablated"],
                "n_inputs": metrics["n_inputs"],
            }
        )
    return rows


def write_site_quality(
    sae_dirs: Sequence[str | Path],
    model: str,
    site: str,
    train_store: str | Path | None,
    out: str | Path,
    model_spec: Mapping,
    dataset_spec: Mapping,
    hierarchy: str | Path | None,
    downstream: bool,
    device: torch.device,
    batch_size: int,
    seed: int,
) -> pd.DataFrame:
    """`site_quality` of the SAEs of one site of `model`, written to the CSV `out`.

    train_store: the model's activation store on the SAE training set (its `site` directory's
    mean is the ablation). Downstream accuracy is measured only with `downstream`, a
    `train_store` and a `hierarchy` file (its node names are the zero-shot class names).
    """
    from saeprobe.hierarchy import read_hierarchy

    downstream = downstream and hierarchy is not None and train_store is not None
    rows = site_quality(
        sae_dirs,
        model,
        site,
        Path(train_store) / site if downstream else None,
        model_spec=model_spec,
        dataset_spec=dataset_spec if downstream else None,
        class_names=read_hierarchy(hierarchy).names if downstream else None,
        device=device,
        batch_size=batch_size,
        seed=seed,
    )
    for row in rows:
        log.info("quality: %s", json.dumps(row))
    table = pd.DataFrame(rows)
    atomic_write_csv(out, table)
    return table
