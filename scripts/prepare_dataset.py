"""Download or check one image-folder dataset before extraction (see saeprobe.data.prepare)."""

import logging
import sys
from pathlib import Path

from saeprobe.data.prepare import prepare_imagefolder
from saeprobe.io import atomic_write_json

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    summary = prepare_imagefolder(snakemake.wildcards.dataset, snakemake.params.spec, Path("data"))
    logging.info("%s", summary)
    atomic_write_json(snakemake.output[0], summary)
