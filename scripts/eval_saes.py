"""Quality metrics of every SAE of one site (NMSE, L0, dead/dense, downstream_recovered), and
the evidence for the reconstruction claim (primary SAE, planted and Gaussian controls).

params: model_name, site, sae_dirs ({name: dir}), primary, controls (train the claim's control
SAEs: off for a control model's own sites, which are not judged), sae (the primary's sweep
entry), train (the site's SAE training settings), model, dataset, downstream, batch_size, seed,
device.
input: the sweep marker, the train / held_out activation stores, and for vision models the
hierarchy. output: quality (one row per SAE), evidence.
"""

from pathlib import Path

from saeprobe.eval.sae_quality import write_reconstruction_evidence, write_site_quality
from saeprobe.jobs import job

with job(snakemake) as j:
    p, inputs = snakemake.params, snakemake.input
    quality = write_site_quality(
        list(dict(p.sae_dirs).values()),
        p.model_name,
        p.site,
        inputs.get("train"),
        snakemake.output.quality,
        model_spec=p.model,
        dataset_spec=p.dataset,
        hierarchy=inputs.get("hierarchy"),
        downstream=bool(p.downstream),
        device=j.device,
        batch_size=int(p.batch_size),
        seed=j.seed,
    )
    write_reconstruction_evidence(
        dict(p.sae_dirs),
        p.primary,
        dict(p.sae),
        dict(p.train),
        Path(inputs.train) / p.site,
        Path(inputs.held_out) / p.site,
        quality,
        f"{p.model_name}/{p.site}",
        snakemake.output.evidence,
        device=j.device,
        seed=j.seed,
        controls=bool(p.controls),
    )
