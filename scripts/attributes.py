"""Automated attribute discovery for the strongest text-encoder SAE latents.

params: shared (see steering.py), attributes (`diffusion.attributes`), seed, device. output:
table (attributes.csv), grid figure (PNG + PDF) of with/without pairs per discovered latent.
"""

from saeprobe.jobs import job

from saeprobe.eval.attributes import attributes_task

with job(snakemake) as j:
    attributes_task(
        dict(snakemake.params.shared),
        dict(snakemake.params.attributes),
        snakemake.input.activations,
        snakemake.input.get("vocab"),
        dict(snakemake.output.items()),
        j.device,
    )
