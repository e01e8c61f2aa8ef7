"""Snakemake script (rule train_world_diffusion): train the world's tiny Stable Diffusion.

params: world_model (the `diffusion.world_model:` section), seed, device. input.manifest: the
world's train split (its directory's parent is the world dir); input.clip: the world CLIP.
output.model_index: `<model dir>/model_index.json` of the saved pipeline; output.info: loss
curves and wall times. log[0]: the log.
"""

from pathlib import Path

from saeprobe.config import load_section
from saeprobe.io import atomic_write_json
from saeprobe.jobs import job
from saeprobe.world.diffusion import WorldDiffusionConfig, train_world_diffusion

inp = snakemake.input
with job(snakemake) as j:
    p = j.params
    cfg = load_section(
        WorldDiffusionConfig,
        p.world_model,
        "diffusion.world_model",
        seed=p.seed,
        device=p.device,
        threads=j.threads,
    )
    info = train_world_diffusion(
        cfg,
        Path(inp.manifest).parent.parent,
        Path(inp.clip).parent,
        Path(snakemake.output.model_index).parent,
    )
    atomic_write_json(snakemake.output.info, info)
