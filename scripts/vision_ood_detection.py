"""Task ood_detection for one model: AUROC and FPR@95 of SAE scores and raw baselines."""

from saeprobe.claims import write_evidence
from saeprobe.eval.features import ModelSites
from saeprobe.eval.ood_detection import ood_detection
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job

inp, p = snakemake.input, snakemake.params
with job(snakemake) as j:
    table = ood_detection(
        ModelSites.from_inputs(p.model, p.sites, p.sae_names, inp.activations, inp.saes),
        p.train_dataset,
        p.id_dataset,
        p.settings["ood_datasets"],
        knn_k=p.settings["knn_k"],
        max_train=p.max_train,
        weight_decays=p.probe["weight_decays"],
        val_fraction=p.probe["val_fraction"],
        seed=p.seed,
        device=j.device,
    )
    atomic_write_csv(snakemake.output[0], table)
    write_evidence(snakemake.output.evidence, [])  # TODO(claims): controls not yet built
