"""Task ood_generalization for one model: probes on raw activations and SAE codes."""

from saeprobe.claims import write_evidence
from saeprobe.eval.features import ModelSites
from saeprobe.eval.ood_generalization import ood_generalization
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job

inp, p = snakemake.input, snakemake.params
with job(snakemake) as j:
    table = ood_generalization(
        ModelSites.from_inputs(p.model, p.sites, p.sae_names, inp.activations, inp.saes),
        p.train_dataset,
        [p.id_dataset, *p.settings["test_datasets"]],
        top_k=p.settings["top_k"],
        max_train=p.max_train,
        weight_decays=p.probe["weight_decays"],
        val_fraction=p.probe["val_fraction"],
        mask_to_present=p.settings["mask_to_present"],
        seed=p.seed,
        device=j.device,
    )
    atomic_write_csv(snakemake.output[0], table)
    write_evidence(snakemake.output.evidence, [])  # TODO(claims): controls not yet built
