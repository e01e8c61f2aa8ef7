"""Collect one vision task's per-model tables into results/tables/ and draw its figures."""

import logging
import sys

import pandas as pd

from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots import vision as plots

FIGURES = {
    "semantics": {"purity": plots.purity_by_level},
    "ood_detection": {"auroc": plots.ood_auroc},
    "ood_generalization": {"accuracy": plots.generalization, "topk": plots.generalization_topk},
    "ontology": {"coverage": plots.ontology_coverage},
}

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    task = snakemake.params.task
    table = pd.concat(
        [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in snakemake.input.tables]
    )
    atomic_write_csv(snakemake.output.table, table)
    for name, draw in FIGURES[task].items():
        save_figure(draw(table), snakemake.output[f"{name}_png"], snakemake.output[f"{name}_pdf"])
    if task == "ontology":
        units = pd.concat([pd.read_csv(p, keep_default_na=False) for p in snakemake.input.units])
        save_figure(
            plots.ontology_heights(units),
            snakemake.output.heights_png,
            snakemake.output.heights_pdf,
        )
