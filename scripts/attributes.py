"""Automated attribute discovery for the strongest text-encoder SAE latents.

params: shared (see steering.py), attributes (`diffusion.attributes`), seed, device. output:
table (attributes.csv), grid figure (PNG + PDF) of with/without pairs per discovered latent.
"""

from saeprobe.claims import write_evidence
from saeprobe.diffusion.experiment import open_experiment
from saeprobe.eval.attributes import attributes_task
from saeprobe.jobs import job

inp = snakemake.input
with job(snakemake) as j:
    exp = open_experiment(
        j.params.shared, inp.activations, inp.get("vocab"), j.device, inp.get("gate")
    )
    rows = attributes_task(
        exp,
        dict(j.params.attributes),
        dict(snakemake.output.items()),
        j.params.primary,
        j.params.seed,
    )
    write_evidence(snakemake.output.evidence, rows)
