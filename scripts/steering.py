"""Steer generation with text-encoder SAE latents, measure the effect and plot it.

params: shared (model, source, dtype, world, sae_dirs, scorer, generation, world_clip), steering
(`diffusion.steering`), seed, device. input: pipeline, sweeps, activations (the SAEs' training
prompts), scorer, vocab and gate (world: which concepts the generator can draw). output: table,
latents, grid / effect / preservation figures.
"""

from saeprobe.claims import write_evidence
from saeprobe.diffusion.experiment import open_experiment
from saeprobe.eval.steering import steering_task
from saeprobe.jobs import job

inp = snakemake.input
with job(snakemake) as j:
    exp = open_experiment(
        j.params.shared, inp.activations, inp.get("vocab"), j.device, inp.get("gate")
    )
    rows = steering_task(
        exp,
        dict(j.params.steering),
        dict(snakemake.output.items()),
        j.params.primary,
        j.params.seed,
    )
    write_evidence(snakemake.output.evidence, rows)
