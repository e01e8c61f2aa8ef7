"""Snakemake script (rule crossmodal_report): crossmodal.csv and the three figures.

params.sites: "{model}/L{layer}/{sae name}" per input, in input order.
"""

from saeprobe.claims import write_evidence
from saeprobe.jobs import job
from saeprobe.plots.crossmodal import crossmodal_report

inp = snakemake.input
with job(snakemake) as j:
    crossmodal_report(
        list(j.params.sites),
        inp.summaries,
        inp.latents,
        inp.concepts,
        inp.shared,
        inp.thumbnails,
        dict(snakemake.output.items()),
    )
    write_evidence(snakemake.output.evidence, [])  # TODO(claims): controls not yet built
