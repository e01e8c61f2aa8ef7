"""Train the SAE sweep of one (model, site), any family, reading the activations once.

input: train / held_out store directories. params: site, sae_dirs ({name: dir}), sweep, train,
normalize_modalities, export_saelens, seed, device. output[0]: the sweep's marker (sweep.json).
"""

from pathlib import Path

from saeprobe.jobs import job
from saeprobe.sae.site import train_site

with job(snakemake) as j:
    p = snakemake.params
    train_site(
        Path(snakemake.input.train) / p.site,
        Path(snakemake.input.held_out) / p.site,
        dict(p.sae_dirs),
        dict(p.sweep),
        dict(p.train),
        snakemake.output[0],
        normalize_modalities=bool(p.normalize_modalities),
        seed=j.seed,
        device=j.device,
        export_saelens=bool(p.export_saelens),
    )
