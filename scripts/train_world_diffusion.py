"""Snakemake script (rule train_world_diffusion): train the world's tiny Stable Diffusion.

params: world_model (the `diffusion.world_model:` section), seed, device. input.manifest: the
world's train split (its directory's parent is the world dir); input.clip: the world CLIP.
output.model_index: `<model dir>/model_index.json` of the saved pipeline; output.info: loss
curves and wall times. log[0]: the log.
"""

import logging
import sys
from pathlib import Path

from saeprobe.config import load_section
from saeprobe.io import atomic_write_json
from saeprobe.world.diffusion import WorldDiffusionConfig, train_world_diffusion

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    cfg = load_section(
        WorldDiffusionConfig,
        snakemake.params.world_model,
        "diffusion.world_model",
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        threads=max(1, int(snakemake.threads)),
    )
    out_dir = Path(snakemake.output.model_index).parent
    info = train_world_diffusion(
        cfg,
        Path(snakemake.input.manifest).parent.parent,
        Path(snakemake.input.clip).parent,
        out_dir,
    )
    atomic_write_json(snakemake.output.info, info)
