"""Snakemake script (rule train_mllm_sae): one SAE on a layer's image+text token mixture.

params: sae (`mllm.sae`: name, arch, width, k, ...), train (`mllm.sae_train`), normalize
(`mllm.normalize_modalities`), seed, device. input: training and held-out extraction dirs.
"""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.mllm.sae import train_mixture_sae
from saeprobe.sae import SAEConfig, TrainConfig

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    torch.set_num_threads(max(1, int(snakemake.threads)))
    p = snakemake.params
    train_mixture_sae(
        snakemake.input.train,
        snakemake.input.held_out,
        int(snakemake.wildcards.layer),
        SAEConfig.from_dict(dict(p.sae)),
        TrainConfig.from_dict(dict(p.train)),
        Path(snakemake.output.sae).parent,
        seed=int(p.seed),
        device=p.device,
        normalize=bool(p.normalize),
    )
