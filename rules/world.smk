# The synthetic world: images with a known hierarchy, and the tiny CLIP trained on them.


rule make_world:
    output:
        images=expand(res("world/{split}/images.npy"), split=WORLD_SPLITS),
        manifests=expand(res("world/{split}/manifest.csv"), split=WORLD_SPLITS),
        hierarchy=res("world/hierarchy.tsv"),
        vocab=res("world/vocab.json"),
    log:
        res("logs/make_world.log"),
    benchmark:
        res("benchmarks/make_world.tsv")
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
        images=res("world/train/images.npy"),
        manifest=res("world/train/manifest.csv"),
        vocab=res("world/vocab.json"),
    output:
        model=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
        model_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
    log:
        res("logs/train_world_clip.log"),
    benchmark:
        res("benchmarks/train_world_clip.tsv")
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


rule init_world_clip:
    output:
        model=res("models/untrained/{model}/open_clip_model.safetensors"),
        model_config=res("models/untrained/{model}/open_clip_config.json"),
    log:
        res("logs/init_world_clip/{model}.log"),
    benchmark:
        res("benchmarks/init_world_clip/{model}.tsv")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        clip=canonical(config.get("world_clip", {})),
        image_size=config.get("world", {}).get("image_size"),
        seed=config["seed"],
    script:
        "../scripts/init_world_clip.py"


rule eval_world_clip:
    input:
        model=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
        model_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
        images=expand(
            res("world/{split}/images.npy"),
            split=config["world_clip"]["eval_splits"],
        ),
        vocab=res("world/vocab.json"),
    output:
        table=res("tables/world_models.csv"),
    log:
        res("logs/eval_world_clip.log"),
    benchmark:
        res("benchmarks/eval_world_clip.tsv")
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
