"""Extract every configured site of one model (any family) on one dataset into one store.

params: model (spec), dataset (spec), settings (extract.*), seed, device. output[0]: the store.
"""

from saeprobe.activations import extract
from saeprobe.jobs import job

with job(snakemake) as j:
    p = snakemake.params
    summary = extract(
        dict(p.dataset),
        dict(p.model),
        snakemake.output[0],
        device=j.device,
        seed=j.seed,
        **dict(p.settings),
    )
    j.log.info(
        "done: %d examples stored, %d skipped, sites %s",
        summary["n_examples"],
        summary["n_skipped"],
        ", ".join(summary["sites"]),
    )
