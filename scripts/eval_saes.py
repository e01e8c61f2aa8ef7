"""Quality metrics of every SAE of one site (NMSE, L0, dead/dense, downstream_recovered)."""

from saeprobe.eval.sae_quality import write_site_quality
from saeprobe.jobs import job

inp, wc = snakemake.input, snakemake.wildcards
with job(snakemake) as j:
    write_site_quality(
        inp.saes,
        inp.train,
        snakemake.output.quality,
        model=wc.model,
        site=wc.site,
        model_spec=j.params.model,
        dataset_spec=j.params.dataset,
        hierarchy=inp.get("hierarchy"),
        downstream=j.params.downstream,
        device=j.device,
        batch_size=int(j.params.batch_size),
        seed=int(j.params.seed),
    )
