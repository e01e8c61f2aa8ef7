# The latent atlas: per SAE a static page of every alive latent (saeprobe.atlas), read on the
# SAE's evaluation dataset, with what each task wrote about each latent; thumbnails once per
# dataset. One job for every SAE of the config.


def atlas_saes() -> list[dict]:
    """Every SAE of the config (controls included), with the store and dataset it is read on."""
    out = []
    for model, site in sae_sites():
        dataset = sae_dataset(model, "eval_dataset")
        for name, sae_dir in sae_dir_map(model, site).items():
            out.append(
                {
                    "model": model,
                    "site": site,
                    "name": name,
                    "family": family(model),
                    "sae_dir": sae_dir,
                    "store": f"{activation_dir(model, dataset)}/{site}",
                    "dataset": dataset,
                    "dataset_spec": dataset_spec(dataset),
                }
            )
    return canonical(out)


def atlas_tables() -> dict:
    """{task: the files whose per-latent rows the atlas shows} of the configured tasks."""
    tables = {}
    if "vision" in config:
        models = config["vision"]["models"]
        tables["semantics"] = [res(f"vision/semantics/{m}.csv") for m in models]
        tables["ood_detection"] = [
            res(f"vision/ood_detection/{m}_latents.csv") for m in models
        ]
        tables["ood_generalization"] = [
            res(f"vision/ood_generalization/{m}_latents.csv") for m in models
        ]
        tables["ontology"] = [res(f"vision/ontology/{m}_units.csv") for m in models]
    if "diffusion" in config:
        tables["steering"] = [res("tables/steering.csv")]
        tables["attributes"] = [res("tables/attributes.csv")]
    return tables


def atlas_crossmodal() -> dict[str, str]:
    """{SAE id: its crossmodal latents.csv}."""
    return {
        "/".join(key): f"{crossmodal_dir(*key)}/latents.csv"
        for key in crossmodal_sites()
    }


def atlas_inputs(wildcards) -> dict:
    inputs = {
        "sweeps": sweep_files(),
        "stores": sorted({s["store"].rsplit("/", 1)[0] for s in atlas_saes()}),
        "tables": [f for files in atlas_tables().values() for f in files],
        "crossmodal": list(atlas_crossmodal().values()),
        "world_images": sorted(
            {
                dataset_inputs(s["dataset"])["images"]
                for s in atlas_saes()
                if s["dataset_spec"]["source"] == "world"
            }
        ),
    }
    if "diffusion" in config:
        inputs["strips"] = res("diffusion/steering_strips.npz")
    return inputs


def atlas_targets() -> list[str]:
    return [res("atlas/index.html")] if sae_sites() else []


rule atlas:
    input:
        unpack(atlas_inputs),
    output:
        index=res("atlas/index.html"),
        pages=directory(res("atlas/saes")),
        media=directory(res("atlas/media")),
    log:
        res("logs/atlas.log"),
    benchmark:
        res("benchmarks/atlas.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=60,
    params:
        saes=atlas_saes(),
        tables=canonical(atlas_tables()),
        crossmodal=atlas_crossmodal(),
        settings=canonical(config.get("atlas", {})),
        setting=lambda wc: "the synthetic world" if uses_world() else "the paper config",
    script:
        "../scripts/atlas.py"
