"""Quality metrics of every SAE of one site (NMSE, L0, dead/dense, downstream_recovered).

params: model_name, site, sae_dirs ({name: dir}), model, dataset, downstream, batch_size, seed,
device. input: the sweep marker, and for vision models train (store) and hierarchy.
output[0]: quality.csv, one row per SAE.
"""

from saeprobe.claims import write_evidence
from saeprobe.eval.sae_quality import write_site_quality
from saeprobe.jobs import job

with job(snakemake) as j:
    p, inputs = snakemake.params, snakemake.input
    write_site_quality(
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
    write_evidence(snakemake.output.evidence, [])  # TODO(claims): controls not yet built
