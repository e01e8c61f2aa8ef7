"""Snakemake script: extract every configured site of one model on one dataset.

params: model (spec dict), dataset (spec dict), settings (batch_size, dtype, shard_images,
num_workers, precision?), seed, device. output[0]: the store directory. log[0]: the log.
"""

import logging
import sys

import torch

from saeprobe.activations import extract

SETTINGS = ("batch_size", "dtype", "shard_images", "num_workers", "precision")

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    torch.set_num_threads(max(1, snakemake.threads))
    settings = dict(snakemake.params.settings)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"extract settings: unknown key(s) {unknown}; allowed: {list(SETTINGS)}")
    summary = extract(
        dict(snakemake.params.dataset),
        dict(snakemake.params.model),
        snakemake.output[0],
        device=snakemake.params.device,
        seed=int(snakemake.params.seed),
        **settings,
    )
    logging.getLogger("extract_activations").info(
        "done: %d images, %d skipped, sites %s",
        summary["n_images"],
        summary["n_skipped"],
        ", ".join(summary["sites"]),
    )
