"""Train every SAE of the sweep on one activation site, reading the activations once."""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.sae import SAEConfig, TrainConfig, train_sweep

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    torch.set_num_threads(max(1, int(snakemake.threads)))
    params = snakemake.params
    site = snakemake.wildcards.site
    out_dirs = [Path(p).parent for p in snakemake.output.saes]
    sweep = [SAEConfig.from_dict({**params.sweep[d.name], "name": d.name}) for d in out_dirs]
    train_sweep(
        Path(snakemake.input.train) / site,
        sweep,
        TrainConfig.from_dict(dict(params.train)),
        out_dirs,
        device=params.device,
        seed=int(params.seed),
        eval_source=Path(snakemake.input.held_out) / site,
        export_saelens=bool(params.export_saelens),
    )
