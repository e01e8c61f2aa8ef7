"""Snakemake script (rule crossmodal_report): crossmodal.csv and the three figures.

params.sites: "{model}/L{layer}/{sae name}" per input, in input order.
"""

import json
import logging
import sys

import numpy as np
import pandas as pd

from saeprobe.io import atomic_write_csv
from saeprobe.plots.crossmodal import (
    crossmodal_table,
    plot_concept_overlap,
    plot_modality_scores,
    plot_shared_latents,
)

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    sites = list(snakemake.params.sites)
    inp, out = snakemake.input, snakemake.output
    summaries = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in inp.summaries]
    latents = [pd.read_csv(p) for p in inp.latents]
    concepts = [pd.read_csv(p) if open(p).read().strip() else pd.DataFrame() for p in inp.concepts]
    shared = [json.load(open(p)) for p in inp.shared]
    thumbs = [np.load(p) for p in inp.thumbnails]
    table = crossmodal_table(sites, summaries)
    atomic_write_csv(out.table, table)
    plot_modality_scores(sites, latents, [out.score_png, out.score_pdf])
    plot_concept_overlap(sites, concepts, [out.overlap_png, out.overlap_pdf])
    plot_shared_latents(sites, shared, thumbs, [out.shared_png, out.shared_pdf])
    logging.info("summary:\n%s", table[table["concept"].fillna("") == ""].to_string())
