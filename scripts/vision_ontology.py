"""Task ontology for one model: LCH heights and coverage against raw, PCA and random units."""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.device import pick_device
from saeprobe.eval.vision import ModelSites, ontology
from saeprobe.hierarchy import read_hierarchy
from saeprobe.io import atomic_write_csv

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    p = snakemake.params
    sites = ModelSites(
        p.model, p.sites, p.sae_names, Path("results/activations"), Path("results/saes")
    )
    metrics, units = ontology(
        sites,
        p.train_dataset,
        p.id_dataset,
        read_hierarchy(snakemake.input.hierarchy),
        top_n=p.settings["top_n"],
        tau=p.settings["tau"],
        min_active=p.settings["min_active"],
        max_train=p.max_train,
        seed=p.seed,
        device=pick_device(p.device),
    )
    atomic_write_csv(snakemake.output.metrics, metrics)
    atomic_write_csv(snakemake.output.units, units)
