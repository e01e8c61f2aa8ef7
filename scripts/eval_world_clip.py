"""Zero-shot accuracy of the world CLIP on shape, superclass, colour and background."""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.world.clip import load_world_clip, write_results, zero_shot_eval

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    model_dir = Path(snakemake.input.model).parent
    model, _, tokenizer = load_world_clip(model_dir, snakemake.params.device)
    world_dir = Path(snakemake.input.vocab).parent
    rows = zero_shot_eval(model, tokenizer, world_dir, splits=list(snakemake.params.splits))
    for row in rows:
        logging.info("%s", row)
    write_results(rows, snakemake.output.table)
