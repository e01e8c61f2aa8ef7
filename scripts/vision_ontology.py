"""Task ontology for one model: LCH heights, specificity against a label-permutation null and
coverage, width-matched against raw, PCA and random units."""

from saeprobe.claims import write_evidence
from saeprobe.eval.features import ModelSites
from saeprobe.eval.ontology import ontology, ontology_claim
from saeprobe.hierarchy import read_hierarchy
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job

inp, p = snakemake.input, snakemake.params
with job(snakemake) as j:
    sites = ModelSites.from_inputs(p.model, p.sites, p.sae_names, inp.activations, inp.saes)
    hierarchy = read_hierarchy(inp.hierarchy)
    metrics, units = ontology(
        sites,
        p.train_dataset,
        p.id_dataset,
        hierarchy,
        top_n=p.settings["top_n"],
        tau=p.settings["tau"],
        min_active=p.settings["min_active"],
        max_train=p.max_train,
        seed=p.seed,
        device=j.device,
        null_draws=p.settings["null_draws"],
        alpha=p.settings["alpha"],
        width_match=p.settings["width_match"],
    )
    atomic_write_csv(snakemake.output.metrics, metrics)
    atomic_write_csv(snakemake.output.units, units)
    evidence = ontology_claim(
        sites, p.id_dataset, hierarchy, p.primary, p.settings, p.seed, j.device
    )
    write_evidence(snakemake.output.evidence, evidence, model=p.model)
