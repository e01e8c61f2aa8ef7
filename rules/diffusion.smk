# Diffusion: steering and attribute discovery with SAEs on a text-to-image model's text
# encoder (extracted and trained by the shared extract_activations and train_saes rules).
# World: a tiny Stable Diffusion trained on the world (its text encoder = the world CLIP's text
# tower); paper: Stable Diffusion v1.5 from the hub. Both load with DiffusionPipeline.


if "diffusion" in config:

    rule train_world_diffusion:
        input:
            images=res("world/train/images.npy"),
            manifest=res("world/train/manifest.csv"),
            clip=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
            clip_config=f"{WORLD_MODEL_DIR}/open_clip_config.json",
        output:
            model_index=WORLD_MODEL_FILES["world_diffusion"],
            info=f"{WORLD_DIFFUSION_DIR}/train_info.json",
        log:
            res("logs/train_world_diffusion.log"),
        benchmark:
            res("benchmarks/train_world_diffusion.tsv")
        # the longest chain of the default run (world CLIP, this, steering, attributes): run it
        # as soon as its inputs exist, before the short jobs that can fill the other core
        priority: 10
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
            model_index=WORLD_MODEL_FILES["world_diffusion"],
            clip=f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
            vocab=res("world/vocab.json"),
        output:
            table=res("tables/world_diffusion.csv"),
            concepts=res("tables/world_diffusion_concepts.csv"),
            png=report(
                res("figures/world_diffusion_samples.png"),
                caption="../report/world_diffusion_samples.rst",
                category="Diffusion",
            ),
            pdf=res("figures/world_diffusion_samples.pdf"),
        log:
            res("logs/world_diffusion_samples.log"),
        benchmark:
            res("benchmarks/world_diffusion_samples.tsv")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=15,
            gpu=GPUS,
        params:
            shared=diffusion_params(),
            render_threshold=config["diffusion"]["render_threshold"],
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/world_diffusion_samples.py"

    rule steering:
        input:
            **diffusion_inputs(),
        output:
            table=report(
                res("tables/steering.csv"),
                caption="../report/steering.rst",
                category="Diffusion",
            ),
            latents=res("diffusion/steering_latents.json"),
            strips=res("diffusion/steering_strips.npz"),
            evidence=res("evidence/steering.csv"),
            controls=res("diffusion/steering_controls.csv"),
            monotone=report(
                res("tables/steering_monotone.csv"),
                caption="../report/steering_monotone.rst",
                category="Diffusion",
            ),
            specificity=report(
                res("tables/steering_specificity.csv"),
                caption="../report/steering_specificity.rst",
                category="Diffusion",
            ),
            controls_fig=report(
                res("figures/steering_controls.png"),
                caption="../report/steering_controls.rst",
                category="Diffusion",
            ),
            controls_fig_pdf=res("figures/steering_controls.pdf"),
            grid=report(
                res("figures/steering_grid.png"),
                caption="../report/steering_grid.rst",
                category="Diffusion",
            ),
            grid_pdf=res("figures/steering_grid.pdf"),
            effect=report(
                res("figures/steering_effect.png"),
                caption="../report/steering_effect.rst",
                category="Diffusion",
            ),
            effect_pdf=res("figures/steering_effect.pdf"),
            preservation=report(
                res("figures/steering_preservation.png"),
                caption="../report/steering_preservation.rst",
                category="Diffusion",
            ),
            preservation_pdf=res("figures/steering_preservation.pdf"),
        log:
            res("logs/steering.log"),
        benchmark:
            res("benchmarks/steering.tsv")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=240,
            gpu=GPUS,
        params:
            shared=diffusion_params(),
            steering=canonical(config["diffusion"]["steering"]),
            primary=sae_primary(diffusion_model()),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/steering.py"

    rule attributes:
        input:
            **diffusion_inputs(),
        output:
            evidence=res("evidence/attributes.csv"),
            controls=res("diffusion/attributes_controls.csv"),
            table=report(
                res("tables/attributes.csv"),
                caption="../report/attributes.rst",
                category="Diffusion",
            ),
            grid=report(
                res("figures/attributes_grid.png"),
                caption="../report/attributes_grid.rst",
                category="Diffusion",
            ),
            grid_pdf=res("figures/attributes_grid.pdf"),
        log:
            res("logs/attributes.log"),
        benchmark:
            res("benchmarks/attributes.tsv")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=240,
            gpu=GPUS,
        params:
            shared=diffusion_params(),
            attributes=canonical(config["diffusion"]["attributes"]),
            primary=sae_primary(diffusion_model()),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/attributes.py"
