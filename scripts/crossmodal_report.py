"""Snakemake script (rule crossmodal_report): crossmodal.csv, the three figures and the
crossmodal claim's evidence.

params.sites: "{model}/{site}/{sae name}" per input, in input order; params.measured: the
models judged; params.primary: {model: pre-registered SAE}; params.negatives: {measured model:
its shuffled-caption twin}.
"""

import pandas as pd

from saeprobe.claims import write_evidence
from saeprobe.eval.crossmodal import crossmodal_evidence
from saeprobe.jobs import job
from saeprobe.plots.crossmodal import crossmodal_report

inp = snakemake.input
with job(snakemake) as j:
    sites = list(j.params.sites)
    crossmodal_report(
        sites,
        inp.summaries,
        inp.latents,
        inp.concepts,
        inp.shared,
        inp.thumbnails,
        dict(snakemake.output.items()),
    )
    summaries = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in inp.summaries]
    rows = crossmodal_evidence(
        sites,
        summaries,
        list(j.params.measured),
        dict(j.params.primary),
        dict(j.params.negatives),
    )
    write_evidence(snakemake.output.evidence, rows)
