"""Snakemake script (rule crossmodal_eval): cross-modal statistics of one mixture SAE.

params.crossmodal: top_m, n_null, min_count, fire_threshold, n_shared_examples; seed.
"""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.mllm.sae import evaluate_crossmodal

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    torch.set_num_threads(max(1, int(snakemake.threads)))
    c = dict(snakemake.params.crossmodal)
    evaluate_crossmodal(
        Path(snakemake.input.sae).parent,
        snakemake.input.acts,
        int(snakemake.wildcards.layer),
        Path(snakemake.output.summary).parent,
        top_m=int(c.get("top_m", 5)),
        n_null=int(c.get("n_null", 1000)),
        min_count=int(c.get("min_count", 5)),
        fire_threshold=float(c.get("fire_threshold", 1e-3)),
        n_shared_examples=int(c.get("n_shared_examples", 4)),
        seed=int(snakemake.params.seed),
    )
