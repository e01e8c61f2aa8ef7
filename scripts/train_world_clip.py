"""Snakemake script (rule train_world_clip): train the world's tiny CLIP contrastively.

params: clip (the `world_clip:` config section), seed and device (used when the section does
not set them). input.vocab: `<world dir>/vocab.json` (the train split is read from that dir).
output.model_config: `<model dir>/open_clip_config.json`; the model dir also receives
`open_clip_model.safetensors` and `train_info.json` (loss curve, wall time). log[0]: the log.
"""

from pathlib import Path

from saeprobe.config import load_section
from saeprobe.jobs import job
from saeprobe.world.clip import train_world_clip
from saeprobe.world.config import WorldClipConfig

with job(snakemake) as j:
    p = j.params
    cfg = load_section(
        WorldClipConfig, p.clip, "world_clip", seed=p.seed, device=p.device, threads=j.threads
    )
    train_world_clip(
        cfg,
        Path(snakemake.input.vocab).parent,
        out_dir=Path(snakemake.output.model_config).parent,
    )
