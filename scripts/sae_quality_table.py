"""Collect every SAE's quality.json into results/tables/sae_quality.csv."""

import json
import logging
import sys

import pandas as pd

from saeprobe.eval.sae_quality import COLUMNS
from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots import vision as plots

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    rows = [json.loads(open(path).read()) for path in snakemake.input]
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"k": "Int64", "n_inputs": "Int64"})
    logging.info("%d SAEs", len(table))
    atomic_write_csv(snakemake.output.table, table)
    save_figure(plots.sae_quality(table), snakemake.output.png, snakemake.output.pdf)
