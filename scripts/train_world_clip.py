"""Snakemake script (rule train_world_clip): train the world's tiny CLIP contrastively.

params: clip (the `world_clip:` config section), seed and device (the global ones).
input.vocab: `<world dir>/vocab.json` (the train split is read from that dir).
output.model_config: `<model dir>/open_clip_config.json`; the model dir also receives
`open_clip_model.safetensors` and `train_info.json` (loss curve, wall time). log[0]: the log.
"""

import json
import logging
import sys
from pathlib import Path

from saeprobe.config import load_section
from saeprobe.world.clip import train_world_clip
from saeprobe.world.config import WorldClipConfig

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    cfg = load_section(
        WorldClipConfig,
        snakemake.params.clip,
        "world_clip",
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        threads=max(1, int(snakemake.threads)),
    )
    model_dir = Path(snakemake.output.model_config).parent
    _, _, info = train_world_clip(cfg, Path(snakemake.input.vocab).parent, out_dir=model_dir)
    info_path = model_dir / "train_info.json"
    info_path.with_name(info_path.name + ".tmp").write_text(
        json.dumps({"config": cfg.to_dict(), **info}, indent=2) + "\n"
    )
    info_path.with_name(info_path.name + ".tmp").replace(info_path)
