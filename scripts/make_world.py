"""Snakemake script (rule make_world): render the synthetic world's splits and files.

params: world (the `world:` config section), seed (used when `world.seed` is not set).
output.hierarchy: `<world dir>/hierarchy.tsv`; every split, `vocab.json` and the hierarchy are
written into its parent directory. log[0]: the log.
"""

from pathlib import Path

from saeprobe.config import load_section
from saeprobe.jobs import job
from saeprobe.world.config import WorldConfig
from saeprobe.world.generate import generate_world

with job(snakemake) as j:
    cfg = load_section(WorldConfig, j.params.world, "world", seed=j.params.seed)
    generate_world(cfg, Path(snakemake.output.hierarchy).parent)
