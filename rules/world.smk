# The synthetic world: images with a known hierarchy, and the tiny CLIP trained on them.


rule make_world:
    output:
        images=expand("results/world/{split}/images.npy", split=WORLD_SPLITS),
        manifests=expand("results/world/{split}/manifest.csv", split=WORLD_SPLITS),
        hierarchy="results/world/hierarchy.tsv",
        vocab="results/world/vocab.json",
    log:
        "results/logs/make_world.log",
    benchmark:
        "results/benchmarks/make_world.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        world=canonical(config["world"]),
        seed=config["seed"],
    script:
        "../scripts/make_world.py"


rule train_world_clip:
    input:
        images="results/world/train/images.npy",
        manifest="results/world/train/manifest.csv",
        vocab="results/world/vocab.json",
    output:
        model=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
        model_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
    log:
        "results/logs/train_world_clip.log",
    benchmark:
        "results/benchmarks/train_world_clip.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=GPUS,
    params:
        clip=canonical(config["world_clip"]),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_world_clip.py"


rule eval_world_clip:
    input:
        model=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
        model_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
        images=expand(
            "results/world/{split}/images.npy",
            split=config["world_clip"]["eval_splits"],
        ),
        vocab="results/world/vocab.json",
    output:
        table="results/tables/world_models.csv",
    log:
        "results/logs/eval_world_clip.log",
    benchmark:
        "results/benchmarks/eval_world_clip.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        splits=config["world_clip"]["eval_splits"],
        device=config["device"],
    script:
        "../scripts/eval_world_clip.py"
