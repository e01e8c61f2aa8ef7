"""Task ood_generalization for one model: probes on raw activations and SAE codes."""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.device import pick_device
from saeprobe.eval.vision import ModelSites, ood_generalization
from saeprobe.io import atomic_write_csv

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    p = snakemake.params
    sites = ModelSites(
        p.model, p.sites, p.sae_names, Path("results/activations"), Path("results/saes")
    )
    table = ood_generalization(
        sites,
        p.train_dataset,
        [p.id_dataset, *p.settings["test_datasets"]],
        top_k=p.settings["top_k"],
        max_train=p.max_train,
        weight_decays=p.probe["weight_decays"],
        val_fraction=p.probe["val_fraction"],
        mask_to_present=p.settings["mask_to_present"],
        seed=p.seed,
        device=pick_device(p.device),
    )
    atomic_write_csv(snakemake.output[0], table)
