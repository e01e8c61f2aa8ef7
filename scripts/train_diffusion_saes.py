"""Snakemake script (rule train_diffusion_saes): the SAE sweep on one text-encoder site.

input[0]: the site's metadata.json (train.npy / heldout.npy next to it). output.saes: one
sae.safetensors per SAE of `diffusion.sae.sweep` (with cfg.json and metrics.json).
"""

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
    site_dir = Path(snakemake.input[0]).parent
    out_dirs = [Path(p).parent for p in snakemake.output.saes]
    sweep = [SAEConfig.from_dict({**params.sweep[d.name], "name": d.name}) for d in out_dirs]
    train_sweep(
        site_dir / "train.npy",
        sweep,
        TrainConfig.from_dict(dict(params.train)),
        out_dirs,
        device=params.device,
        seed=int(params.seed),
        eval_source=site_dir / "heldout.npy",
        activation_spec={"site_dir": str(site_dir)},
    )
