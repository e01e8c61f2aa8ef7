"""Task ood_detection for one model: AUROC and FPR@95 of the same scores on raw activations and
SAE codes, SAE-only scores, supervised oracles, and the claim's evidence with its controls."""

from saeprobe.claims import write_evidence
from saeprobe.eval.features import ModelSites
from saeprobe.eval.ood_detection import latent_contributions, ood_detection, site_evidence
from saeprobe.eval.probes import probe_options
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job

inp, p = snakemake.input, snakemake.params
s = p.settings
with job(snakemake) as j:
    far, fresh = s.get("far_dataset"), s.get("fresh_id_dataset")
    measured = s.get("measured_dataset", s["ood_datasets"][0])
    sites = ModelSites.from_inputs(p.model, p.sites, p.sae_names, inp.activations, inp.saes)
    table, scores, oracles = ood_detection(
        sites,
        p.train_dataset,
        p.id_dataset,
        s["ood_datasets"],
        knn_k=s["knn_k"],
        max_train=p.max_train,
        weight_decays=p.probe["weight_decays"],
        val_fraction=p.probe["val_fraction"],
        probe_options=probe_options(p.probe),
        seed=p.seed,
        device=j.device,
        controls=[d for d in (far, fresh) if d is not None],
        knn_bank=s.get("knn_bank"),
        ood_groups=s.get("ood_groups", {}),
        factors=s.get("factors", []),
    )
    atomic_write_csv(snakemake.output[0], table)
    atomic_write_csv(
        snakemake.output.latents, latent_contributions(sites, p.id_dataset, measured, j.device)
    )
    rows = site_evidence(scores, oracles, p.id_dataset, measured, far, fresh, p.primary,
                         s["primary_score"], p.sae_names, seed=p.seed)  # fmt: skip
    write_evidence(snakemake.output.evidence, rows, model=p.model)
