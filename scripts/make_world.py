"""Snakemake script (rule make_world): render the synthetic world's splits and files.

params: world (the `world:` config section), seed (the global seed).
output.hierarchy: `<world dir>/hierarchy.tsv`; every split, `vocab.json` and the hierarchy are
written into its parent directory. log[0]: the log.
"""

import logging
import sys
from pathlib import Path

from saeprobe.config import load_section
from saeprobe.world.config import WorldConfig
from saeprobe.world.generate import generate_world

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    cfg = load_section(WorldConfig, snakemake.params.world, "world", seed=snakemake.params.seed)
    generate_world(cfg, Path(snakemake.output.hierarchy).parent)
