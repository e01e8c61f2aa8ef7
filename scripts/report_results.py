"""Write results/RESULTS.md: every claim of the study, judged on this run's tables."""

import logging
import sys
from pathlib import Path

from saeprobe.io import atomic_write_text
from saeprobe.summary import render, summarise

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    tables = {Path(p).name: Path(p) for p in snakemake.input.tables}
    claims = summarise(tables)
    for claim in claims:
        logging.info("%s: %s (%s)", claim.claim, claim.verdict, claim.measured)
    atomic_write_text(snakemake.output[0], render(claims, snakemake.params.setting))
