"""Snakemake script (rule init_world_clip): save the world CLIP at its seeded random
initialisation, never trained (a control model, `models.<name>.untrained`).

params: clip (the `world_clip:` config section), image_size (`world.image_size`), seed.
output.model_config: `<model dir>/open_clip_config.json`; the weights go beside it.
"""

from pathlib import Path

from saeprobe.config import load_section
from saeprobe.jobs import job
from saeprobe.world.clip import build_world_clip, save_world_clip
from saeprobe.world.config import WorldClipConfig

with job(snakemake) as j:
    p = j.params
    cfg = load_section(WorldClipConfig, p.clip, "world_clip", seed=p.seed)
    model, _, model_cfg = build_world_clip(cfg, p.image_size)
    save_world_clip(model, model_cfg, Path(snakemake.output.model_config).parent)
