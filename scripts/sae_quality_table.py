"""Collect every site's quality.csv into the SAE quality table and its figure."""

import pandas as pd

from saeprobe.eval.sae_quality import COLUMNS
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job
from saeprobe.plots import save_figure
from saeprobe.plots import vision as plots

with job(snakemake) as j:
    rows = pd.concat([pd.read_csv(path) for path in snakemake.input], ignore_index=True)
    table = rows.reindex(columns=COLUMNS).astype({"k": "Int64", "n_inputs": "Int64"})
    j.log.info("%d SAEs", len(table))
    atomic_write_csv(snakemake.output.table, table)
    save_figure(plots.sae_quality(table), snakemake.output.png, snakemake.output.pdf)
