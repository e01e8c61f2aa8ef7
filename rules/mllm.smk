# Multimodal LLM: one SAE over image and text tokens of a LLaVA-style model (crossmodal).
# Layout: results/models/world_llava (the world's tiny LLaVA, save_pretrained),
# results/mllm/activations/{model}/{dataset} (token activations), results/mllm/saes/{model}/L{layer}/{name},
# results/mllm/crossmodal/{model}/L{layer}/{name} (statistics), results/tables/crossmodal.csv.
from saeprobe.mllm import workflow as mllm_wf

WORLD_LLAVA_DIR = mllm_wf.WORLD_LLAVA_DIR
mllm_targets = lambda: mllm_wf.targets(config)


wildcard_constraints:
    layer="[0-9]+",


rule train_world_llava:
    input:
        clip=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
        clip_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
        images="results/world/train/images.npy",
        test_images="results/world/test/images.npy",
        manifests=expand("results/world/{split}/manifest.csv", split=["train", "test"]),
        vocab="results/world/vocab.json",
    output:
        model=f"{WORLD_LLAVA_DIR}/model.safetensors",
        config=f"{WORLD_LLAVA_DIR}/config.json",
        info=f"{WORLD_LLAVA_DIR}/train_info.json",
        table=report(
            "results/tables/world_llava.csv",
            caption="../report/crossmodal_world_llava.rst",
            category="Multimodal LLM",
        ),
    log:
        "results/logs/train_world_llava.log",
    benchmark:
        "results/benchmarks/train_world_llava.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        llava=mllm_wf.section(config, "world_llava"),
        seed=config["seed"],
    script:
        "../scripts/train_world_llava.py"


rule download_coco:
    output:
        captions=f"{mllm_wf.coco_root(config)}/annotations/captions_val2017.json",
        instances=f"{mllm_wf.coco_root(config)}/annotations/instances_val2017.json",
        images=directory(f"{mllm_wf.coco_root(config)}/val2017"),
    log:
        "results/logs/download_coco.log",
    benchmark:
        "results/benchmarks/download_coco.tsv"
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        coco=mllm_wf.section(config, "coco"),
    script:
        "../scripts/download_coco.py"


rule extract_mllm:
    input:
        unpack(lambda wc: mllm_wf.extract_inputs(config, wc.model, wc.dataset)),
    output:
        directory("results/mllm/activations/{model}/{dataset}"),
    log:
        "results/logs/extract_mllm/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_mllm/{model}/{dataset}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(32000),
        runtime=lambda wc, attempt: 120 * attempt,
        gpu=GPUS,
    params:
        model=lambda wc: mllm_wf.model_spec(config, wc.model),
        dataset=lambda wc: mllm_wf.dataset_spec(config, wc.dataset),
        settings=mllm_wf.section(config, "extract"),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/extract_mllm.py"


rule train_mllm_sae:
    input:
        train=lambda wc: mllm_wf.activation_dir(config, wc.model, "train_dataset"),
        held_out=lambda wc: mllm_wf.activation_dir(config, wc.model, "eval_dataset"),
    output:
        sae="results/mllm/saes/{model}/L{layer}/{name}/sae.safetensors",
        cfg="results/mllm/saes/{model}/L{layer}/{name}/cfg.json",
        scale="results/mllm/saes/{model}/L{layer}/{name}/modality_scale.json",
    log:
        "results/logs/train_mllm_sae/{model}/L{layer}/{name}.log",
    benchmark:
        "results/benchmarks/train_mllm_sae/{model}/L{layer}/{name}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(32000),
        runtime=lambda wc, attempt: 240 * attempt,
        gpu=GPUS,
    params:
        sae=mllm_wf.section(config, "sae"),
        train=mllm_wf.section(config, "sae_train"),
        normalize=config.get("mllm", {}).get("normalize_modalities", True),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_mllm_sae.py"


rule crossmodal_eval:
    input:
        sae="results/mllm/saes/{model}/L{layer}/{name}/sae.safetensors",
        scale="results/mllm/saes/{model}/L{layer}/{name}/modality_scale.json",
        acts=lambda wc: mllm_wf.activation_dir(config, wc.model, "eval_dataset"),
    output:
        summary="results/mllm/crossmodal/{model}/L{layer}/{name}/summary.csv",
        latents="results/mllm/crossmodal/{model}/L{layer}/{name}/latents.csv",
        concepts="results/mllm/crossmodal/{model}/L{layer}/{name}/concepts.csv",
        shared="results/mllm/crossmodal/{model}/L{layer}/{name}/shared.json",
        thumbnails="results/mllm/crossmodal/{model}/L{layer}/{name}/thumbnails.npy",
    log:
        "results/logs/crossmodal_eval/{model}/L{layer}/{name}.log",
    benchmark:
        "results/benchmarks/crossmodal_eval/{model}/L{layer}/{name}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=60,
    params:
        crossmodal=mllm_wf.section(config, "crossmodal"),
        seed=config["seed"],
    script:
        "../scripts/crossmodal_eval.py"


rule crossmodal_report:
    input:
        summaries=mllm_wf.eval_files(config, "summary.csv"),
        latents=mllm_wf.eval_files(config, "latents.csv"),
        concepts=mllm_wf.eval_files(config, "concepts.csv"),
        shared=mllm_wf.eval_files(config, "shared.json"),
        thumbnails=mllm_wf.eval_files(config, "thumbnails.npy"),
    output:
        table=report(
            "results/tables/crossmodal.csv",
            caption="../report/crossmodal.rst",
            category="Multimodal LLM",
        ),
        score_png=report(
            "results/figures/crossmodal_modality_score.png",
            caption="../report/crossmodal_modality_score.rst",
            category="Multimodal LLM",
        ),
        score_pdf=report(
            "results/figures/crossmodal_modality_score.pdf",
            caption="../report/crossmodal_modality_score.rst",
            category="Multimodal LLM",
        ),
        overlap_png=report(
            "results/figures/crossmodal_concept_overlap.png",
            caption="../report/crossmodal_concept_overlap.rst",
            category="Multimodal LLM",
        ),
        overlap_pdf=report(
            "results/figures/crossmodal_concept_overlap.pdf",
            caption="../report/crossmodal_concept_overlap.rst",
            category="Multimodal LLM",
        ),
        shared_png=report(
            "results/figures/crossmodal_shared_latents.png",
            caption="../report/crossmodal_shared_latents.rst",
            category="Multimodal LLM",
        ),
        shared_pdf=report(
            "results/figures/crossmodal_shared_latents.pdf",
            caption="../report/crossmodal_shared_latents.rst",
            category="Multimodal LLM",
        ),
    log:
        "results/logs/crossmodal_report.log",
    benchmark:
        "results/benchmarks/crossmodal_report.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sites=mllm_wf.sites(config),
    script:
        "../scripts/crossmodal_report.py"
