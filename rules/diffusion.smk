# Diffusion: SAEs on the text encoder of a text-to-image model, steering, attribute discovery.
# World: a tiny Stable Diffusion trained on the world (its text encoder = the world CLIP's text
# tower); paper: Stable Diffusion v1.5 from the hub. Both load with DiffusionPipeline.


from saeprobe.diffusion import workflow as diffusion_wf

diffusion_targets = lambda: diffusion_wf.targets(config)


if "diffusion" in config:

    ruleorder: train_diffusion_saes > train_saes

    rule train_world_diffusion:
        input:
            images="results/world/train/images.npy",
            manifest="results/world/train/manifest.csv",
            clip=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
            clip_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
        output:
            model_index="results/models/{dmodel}/model_index.json",
            info="results/models/{dmodel}/train_info.json",
        log:
            "results/logs/train_world_diffusion/{dmodel}.log",
        benchmark:
            "results/benchmarks/train_world_diffusion/{dmodel}.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=6000,
            runtime=60,
            gpu=GPUS,
        params:
            world_model=canonical(config["diffusion"]["world_model"]),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/train_world_diffusion.py"

    rule world_diffusion_samples:
        input:
            model_index=f"results/models/{diffusion_wf.model(config)}/model_index.json",
            clip=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
            vocab="results/world/vocab.json",
        output:
            table="results/tables/world_diffusion.csv",
            png=report(
                "results/figures/world_diffusion_samples.png",
                caption="../report/world_diffusion_samples.rst",
                category="Diffusion",
            ),
            pdf="results/figures/world_diffusion_samples.pdf",
        log:
            "results/logs/world_diffusion_samples.log",
        benchmark:
            "results/benchmarks/world_diffusion_samples.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=15,
            gpu=GPUS,
        params:
            shared=diffusion_wf.shared_params(config),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/world_diffusion_samples.py"

    if config["diffusion"]["corpus"]["source"] == "download":

        rule download_prompts:
            output:
                f"results/data/prompts/{config['diffusion']['corpus']['file']}",
            log:
                "results/logs/download_prompts.log",
            benchmark:
                "results/benchmarks/download_prompts.tsv"
            localrule: True
            conda:
                ENV
            resources:
                mem_mb=1000,
                runtime=60,
            params:
                url=config["diffusion"]["corpus"].get("url"),
                sha256=config["diffusion"]["corpus"].get("sha256"),
            script:
                "../scripts/download_prompts.py"

    rule text_activations:
        input:
            pipeline=diffusion_wf.pipeline_input(config),
            corpus=diffusion_wf.corpus_inputs(config),
        output:
            diffusion_wf.activation_files(config),
        log:
            "results/logs/text_activations.log",
        benchmark:
            "results/benchmarks/text_activations.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=60,
            gpu=GPUS,
        params:
            source=lambda wc, input: (
                str(Path(input.pipeline[0]).parent)
                if input.pipeline
                else config["diffusion"]["hub_id"]
            ),
            dtype=config["diffusion"]["dtype"],
            corpus=canonical(config["diffusion"]["corpus"]),
            text=canonical(config["diffusion"]["text"]),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/text_activations.py"

    rule train_diffusion_saes:
        input:
            f"results/activations/{diffusion_wf.model(config)}/{diffusion_wf.corpus_name(config)}/{{site}}/metadata.json",
        output:
            saes=expand(
                f"results/saes/{diffusion_wf.model(config)}/{{{{site}}}}/{{name}}/sae.safetensors",
                name=diffusion_wf.sae_names(config),
            ),
        log:
            "results/logs/train_diffusion_saes/{site}.log",
        benchmark:
            "results/benchmarks/train_diffusion_saes/{site}.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(8000),
            runtime=120,
            gpu=GPUS,
        params:
            sweep=canonical(config["diffusion"]["sae"]["sweep"]),
            train=canonical(config["diffusion"]["sae"]["train"]),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/train_diffusion_saes.py"

    rule steering:
        input:
            **diffusion_wf.eval_inputs(config),
        output:
            table=report(
                "results/tables/steering.csv",
                caption="../report/steering.rst",
                category="Diffusion",
            ),
            latents="results/diffusion/steering_latents.json",
            grid=report(
                "results/figures/steering_grid.png",
                caption="../report/steering_grid.rst",
                category="Diffusion",
            ),
            grid_pdf="results/figures/steering_grid.pdf",
            effect=report(
                "results/figures/steering_effect.png",
                caption="../report/steering_effect.rst",
                category="Diffusion",
            ),
            effect_pdf="results/figures/steering_effect.pdf",
            preservation=report(
                "results/figures/steering_preservation.png",
                caption="../report/steering_preservation.rst",
                category="Diffusion",
            ),
            preservation_pdf="results/figures/steering_preservation.pdf",
        log:
            "results/logs/steering.log",
        benchmark:
            "results/benchmarks/steering.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=240,
            gpu=GPUS,
        params:
            shared=diffusion_wf.shared_params(config),
            steering=canonical(config["diffusion"]["steering"]),
            text=canonical(config["diffusion"]["text"]),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/steering.py"

    rule attributes:
        input:
            **diffusion_wf.eval_inputs(config),
        output:
            table=report(
                "results/tables/attributes.csv",
                caption="../report/attributes.rst",
                category="Diffusion",
            ),
            grid=report(
                "results/figures/attributes_grid.png",
                caption="../report/attributes_grid.rst",
                category="Diffusion",
            ),
            grid_pdf="results/figures/attributes_grid.pdf",
        log:
            "results/logs/attributes.log",
        benchmark:
            "results/benchmarks/attributes.tsv"
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=240,
            gpu=GPUS,
        params:
            shared=diffusion_wf.shared_params(config),
            attributes=canonical(config["diffusion"]["attributes"]),
            text=canonical(config["diffusion"]["text"]),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/attributes.py"
