"""Snakemake script (rule download_prompts): fetch the prompt corpus (resumable, checksummed)."""

import logging
import sys

from saeprobe.data.download import ensure

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    ensure(snakemake.params.url, snakemake.output[0], snakemake.params.sha256)
