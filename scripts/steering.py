"""Steer generation with text-encoder SAE latents, measure the effect and plot it.

params: shared (model, source, dtype, world, sae_dirs, scorer, generation, world_clip), steering
(`diffusion.steering`), seed, device. input: pipeline, sweeps, activations (the SAEs' training
prompts), scorer, vocab (world). output: table, latents, grid / effect / preservation figures.
"""

from saeprobe.jobs import job

from saeprobe.eval.steering import steering_task

with job(snakemake) as j:
    steering_task(
        dict(snakemake.params.shared),
        dict(snakemake.params.steering),
        snakemake.input.activations,
        snakemake.input.get("vocab"),
        dict(snakemake.output.items()),
        j.device,
    )
