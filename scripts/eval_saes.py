"""Quality metrics of every SAE of one site (NMSE, L0, dead/dense, downstream_recovered)."""

import json
import logging
import sys
from pathlib import Path

import torch

from saeprobe.device import pick_device
from saeprobe.eval.sae_quality import site_quality
from saeprobe.hierarchy import read_hierarchy
from saeprobe.io import atomic_write_json

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    params = snakemake.params
    site = snakemake.wildcards.site
    hierarchy = snakemake.input.get("hierarchy")
    downstream = params.downstream and hierarchy is not None
    rows = site_quality(
        [Path(p).parent for p in snakemake.input.saes],
        train=Path(snakemake.input.train) / site,
        model=snakemake.wildcards.model,
        model_spec=params.model,
        dataset_spec=params.dataset if downstream else None,
        class_names=read_hierarchy(hierarchy).names if downstream else None,
        device=pick_device(params.device),
        batch_size=int(params.batch_size),
        seed=int(params.seed),
    )
    for row, path in zip(rows, snakemake.output.quality, strict=True):
        assert Path(path).parent.name == row["sae"].rsplit("/", 1)[-1]
        logging.info("quality: %s", json.dumps(row))
        atomic_write_json(Path(path), row)
