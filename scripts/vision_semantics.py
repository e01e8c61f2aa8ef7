"""Task semantics for one model: per-unit purity and names, and top-image grids."""

from saeprobe.claims import write_evidence
from saeprobe.eval.features import ModelSites
from saeprobe.eval.semantics import semantics_task
from saeprobe.hierarchy import read_hierarchy
from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job
from saeprobe.plots import save_figure
from saeprobe.plots.vision import top_image_grid

inp, out, p = snakemake.input, snakemake.output, snakemake.params
with job(snakemake) as j:
    control = None
    if p.control is not None:
        sites = ModelSites.from_inputs(
            p.control, p.sites, [p.control_primary], [inp.control_activations], inp.control_saes
        )
        control = (sites, p.control_primary)
    table, panels, evidence = semantics_task(
        ModelSites.from_inputs(p.model, p.sites, p.sae_names, inp.activations, inp.saes),
        p.id_dataset,
        read_hierarchy(inp.hierarchy),
        p.attributes,
        p.settings,
        dataset_spec=p.dataset_spec,
        namer_spec=p.namer_spec,
        namer_dir=inp.get("namer"),
        device=j.device,
        primary=p.primary,
        seed=p.seed,
        control=control,
    )
    atomic_write_csv(out.units, table)
    save_figure(top_image_grid(panels), out.grid_png, out.grid_pdf)
    write_evidence(out.evidence, evidence, model=p.model)
