"""Task semantics for one model: per-unit purity and names, and top-image grids."""

import logging
import sys
from pathlib import Path

import torch

from saeprobe.data.thumbnails import thumbnails
from saeprobe.device import pick_device
from saeprobe.eval.features import load_site, sae_codes
from saeprobe.eval.semantics import grid_latents, top_images
from saeprobe.eval.vision import ModelSites, build_namer, concept_vocabulary, semantics
from saeprobe.hierarchy import read_hierarchy
from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots.vision import top_image_grid

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    p = snakemake.params
    device = pick_device(p.device)
    settings = p.settings
    sites = ModelSites(
        p.model, p.sites, p.sae_names, Path("results/activations"), Path("results/saes")
    )
    hierarchy = read_hierarchy(snakemake.input.hierarchy)
    id_dir = sites.activation_dir(p.id_dataset)
    namer = None
    if p.namer is not None:
        images = load_site(id_dir, p.sites[0]).images
        concepts = concept_vocabulary(hierarchy, images, p.attributes, settings["extra_concepts"])
        namer_dir = Path("results/activations") / p.namer / p.id_dataset
        namer = build_namer(p.namer_spec, namer_dir, concepts, settings["prompt"], device)
        logging.info("naming with %s over %d concepts", p.namer, len(concepts))
    table = semantics(
        sites,
        p.id_dataset,
        hierarchy,
        p.attributes,
        namer,
        top_n=settings["top_n"],
        min_active=settings["min_active"],
        device=device,
    )
    atomic_write_csv(snakemake.output.units, table)

    grid_sae = p.settings.get("grid_sae") or p.sae_names[0]
    panels = []
    for site in p.sites:
        data = load_site(id_dir, site)
        codes = sae_codes(sites.load_saes(site, device)[grid_sae], data)
        rows_of = table[(table["site"] == site) & (table["features"] == grid_sae)]
        chosen = grid_latents(rows_of, settings["grid_latents"])
        top = top_images(codes[:, chosen], settings["grid_images"], positive_only=True)
        rows = []
        for j, latent in enumerate(chosen):
            keep = top.indices[j][top.valid[j]]
            info = rows_of[rows_of["latent"] == latent].iloc[0]
            image_rows = data.images.iloc[keep]
            paths = image_rows["path"].tolist() if "path" in image_rows else []
            rows.append(
                (
                    f"#{latent} {info['name']}\n"
                    f"({info['name_score']:.2f}; purity {info['purity']:.2f})",
                    thumbnails(p.dataset_spec, paths, image_rows["index"].tolist()),
                )
            )
        panels.append(
            (f"{p.model} {site}, SAE {grid_sae}: top images of its best-named latents", rows)
        )
    save_figure(top_image_grid(panels), snakemake.output.grid_png, snakemake.output.grid_pdf)
