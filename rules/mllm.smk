# Multimodal LLM: SAEs over image and caption tokens of a LLaVA-style model (extracted and
# trained by the shared extract_activations and train_saes rules), the crossmodal statistics.
# The world's tiny LLaVA is trained here (save_pretrained, loaded like llava-hf models).


rule train_world_llava:
    input:
        clip=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
        clip_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
        images=res("world/train/images.npy"),
        test_images=res("world/test/images.npy"),
        manifests=expand(res("world/{split}/manifest.csv"), split=["train", "test"]),
        vocab=res("world/vocab.json"),
    output:
        model=f"{WORLD_LLAVA_DIR}/model.safetensors",
        config=f"{WORLD_LLAVA_DIR}/config.json",
        info=f"{WORLD_LLAVA_DIR}/train_info.json",
        accuracy=f"{WORLD_LLAVA_DIR}/accuracy.csv",
    log:
        res("logs/train_world_llava.log"),
    benchmark:
        res("benchmarks/train_world_llava.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        llava=canonical(config["mllm"]["world_llava"]),
        shuffle_captions=False,
        seed=config["seed"],
    script:
        "../scripts/train_world_llava.py"


# The crossmodal claim's negative control: the same model, every image paired with another
# image's caption (a `models` entry with shuffle_captions: true).
use rule train_world_llava as train_world_llava_shuffled with:
    output:
        model=f"{WORLD_LLAVA_SHUFFLED_DIR}/model.safetensors",
        config=f"{WORLD_LLAVA_SHUFFLED_DIR}/config.json",
        info=f"{WORLD_LLAVA_SHUFFLED_DIR}/train_info.json",
        accuracy=f"{WORLD_LLAVA_SHUFFLED_DIR}/accuracy.csv",
    log:
        res("logs/train_world_llava_shuffled.log"),
    benchmark:
        res("benchmarks/train_world_llava_shuffled.tsv")
    params:
        llava=canonical(config["mllm"]["world_llava"]),
        shuffle_captions=True,
        seed=config["seed"],


# The accuracy table sits with the model (DVC's `world` group: restoring the model restores it);
# the copy in tables/ is the one the report shows.
rule world_llava_table:
    input:
        f"{WORLD_LLAVA_DIR}/accuracy.csv",
    output:
        report(
            res("tables/world_llava.csv"),
            caption="../report/crossmodal_world_llava.rst",
            category="Multimodal LLM",
        ),
    log:
        res("logs/world_llava_table.log"),
    benchmark:
        res("benchmarks/world_llava_table.tsv")
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "(cp {input} {output}.tmp && mv {output}.tmp {output}) 2> {log}"


rule download_coco_annotations:
    output:
        captions=expand(
            "{root}/annotations/captions_{split}.json",
            root=coco_root(),
            split=COCO_SPLITS,
        ),
        instances=expand(
            "{root}/annotations/instances_{split}.json",
            root=coco_root(),
            split=COCO_SPLITS,
        ),
    log:
        res("logs/download_coco/annotations.log"),
    benchmark:
        res("benchmarks/download_coco/annotations.tsv")
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        archive=lambda wc: coco_archive(coco_config(), "annotations"),
        root=lambda wc, output: str(Path(output.captions[0]).parent.parent),
    script:
        "../scripts/download_coco.py"


rule download_coco_images:
    output:
        images=directory(f"{coco_root()}/{{coco_split}}"),
    log:
        res("logs/download_coco/{coco_split}.log"),
    benchmark:
        res("benchmarks/download_coco/{coco_split}.tsv")
    wildcard_constraints:
        coco_split="|".join(COCO_SPLITS),
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=lambda wc: 240 if wc.coco_split == "train2017" else 60,
    params:
        archive=lambda wc: coco_archive(coco_config(), wc.coco_split),
        root=lambda wc, output: str(Path(output.images).parent),
    script:
        "../scripts/download_coco.py"


rule crossmodal_eval:
    input:
        unpack(crossmodal_eval_inputs),
    output:
        summary=res("crossmodal/{model}/{site}/{name}/summary.csv"),
        latents=res("crossmodal/{model}/{site}/{name}/latents.csv"),
        concepts=res("crossmodal/{model}/{site}/{name}/concepts.csv"),
        shared=res("crossmodal/{model}/{site}/{name}/shared.json"),
        thumbnails=res("crossmodal/{model}/{site}/{name}/thumbnails.npy"),
    log:
        res("logs/crossmodal_eval/{model}/{site}/{name}.log"),
    benchmark:
        res("benchmarks/crossmodal_eval/{model}/{site}/{name}.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=60,
    params:
        sae_dir=lambda wc: f"{sae_site_dir(wc.model, wc.site)}/{wc.name}",
        site=lambda wc: wc.site,
        crossmodal=canonical(config.get("mllm", {}).get("crossmodal", {})),
        seed=config["seed"],
    script:
        "../scripts/crossmodal_eval.py"


rule crossmodal_report:
    input:
        summaries=crossmodal_files("summary.csv"),
        latents=crossmodal_files("latents.csv"),
        concepts=crossmodal_files("concepts.csv"),
        shared=crossmodal_files("shared.json"),
        thumbnails=crossmodal_files("thumbnails.npy"),
    output:
        evidence=res("evidence/crossmodal.csv"),
        table=report(
            res("tables/crossmodal.csv"),
            caption="../report/crossmodal.rst",
            category="Multimodal LLM",
        ),
        score_png=report(
            res("figures/crossmodal_modality_score.png"),
            caption="../report/crossmodal_modality_score.rst",
            category="Multimodal LLM",
        ),
        score_pdf=report(
            res("figures/crossmodal_modality_score.pdf"),
            caption="../report/crossmodal_modality_score.rst",
            category="Multimodal LLM",
        ),
        overlap_png=report(
            res("figures/crossmodal_concept_overlap.png"),
            caption="../report/crossmodal_concept_overlap.rst",
            category="Multimodal LLM",
        ),
        overlap_pdf=report(
            res("figures/crossmodal_concept_overlap.pdf"),
            caption="../report/crossmodal_concept_overlap.rst",
            category="Multimodal LLM",
        ),
        shared_png=report(
            res("figures/crossmodal_shared_latents.png"),
            caption="../report/crossmodal_shared_latents.rst",
            category="Multimodal LLM",
        ),
        shared_pdf=report(
            res("figures/crossmodal_shared_latents.pdf"),
            caption="../report/crossmodal_shared_latents.rst",
            category="Multimodal LLM",
        ),
    log:
        res("logs/crossmodal_report.log"),
    benchmark:
        res("benchmarks/crossmodal_report.tsv")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sites=["/".join(key) for key in crossmodal_sites()],
        datasets=crossmodal_datasets(),
        measured=config.get("mllm", {}).get("models", []),
        primary=crossmodal_primary(),
        negatives=crossmodal_negatives(),
    script:
        "../scripts/crossmodal_report.py"
