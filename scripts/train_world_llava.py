"""Snakemake script (rule train_world_llava): train the world's tiny LLaVA captioner and score it.

params: llava (the `mllm.world_llava` config section), seed. input: the world CLIP and the world.
output: the save_pretrained directory (model + processor), train_info.json and the caption
accuracy table (model, attribute, split, accuracy, chance, n) on the world's test split.
"""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.io import atomic_write_csv, atomic_write_json
from saeprobe.mllm.data import world_examples
from saeprobe.world.llava import caption_accuracy, train_world_llava, world_llava_configs

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    torch.set_num_threads(max(1, int(snakemake.threads)))
    cfg, spec = world_llava_configs(snakemake.params.llava, int(snakemake.params.seed))
    world_dir = Path(snakemake.input.vocab).parent
    out_dir = Path(snakemake.output.model).parent
    model, processor, info = train_world_llava(
        cfg, spec, world_dir, Path(snakemake.input.clip).parent, out_dir
    )
    test = world_examples(world_dir, "test", cfg.eval_examples, cfg.seed)
    table = caption_accuracy(model, processor, test, "test")
    logging.info("caption accuracy on the test split:\n%s", table.to_string())
    atomic_write_json(out_dir / "train_info.json", {**info, "accuracy": table.to_dict("records")})
    atomic_write_csv(snakemake.output.table, table)
