"""Task ood_generalization for one model: probes on raw activations and SAE codes, and the
claim's evidence (shifted sets, and a planted spurious colour correlation as controls)."""

from saeprobe.claims import write_evidence
from saeprobe.eval.features import ModelSites
from saeprobe.eval.ood_generalization import SpuriousSettings, ood_generalization
from saeprobe.eval.probes import probe_options
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job

inp, p = snakemake.input, snakemake.params
with job(snakemake) as j:
    shifted = list(p.settings["test_datasets"])
    table, evidence, latents = ood_generalization(
        ModelSites.from_inputs(p.model, p.sites, p.sae_names, inp.activations, inp.saes),
        p.train_dataset,
        [p.id_dataset, *shifted],
        top_k=p.settings["top_k"],
        max_train=p.max_train,
        weight_decays=p.probe["weight_decays"],
        val_fraction=p.probe["val_fraction"],
        probe_options=probe_options(p.probe),
        mask_to_present=p.settings["mask_to_present"],
        seed=p.seed,
        device=j.device,
        shifted=shifted,
        primary=p.primary,
        spurious=SpuriousSettings(**p.settings.get("spurious", {})),
        control_dataset=p.id_dataset,
        naming_levels=p.attributes,
        per_class_k=p.settings.get("per_class_k", []),
    )
    atomic_write_csv(snakemake.output[0], table)
    atomic_write_csv(snakemake.output.latents, latents)
    write_evidence(snakemake.output.evidence, evidence)
