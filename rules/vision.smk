# Vision-embedding tasks: semantics, OOD detection, OOD generalization, ontology.
# One job per task and model (all its SAE sites), then one table-and-figures job per task.
# The task jobs' mem_mb are the full-size peaks that benchmarks/paper_scale.py measures and
# extrapolates (BENCHMARKS.md, "Vision tasks at the paper's sizes") with a margin; their
# runtime values are GPU estimates.

if "vision" in config:
    VISION = config["vision"]

    rule vision_semantics:
        input:
            unpack(vision_inputs("semantics", [VISION["id_dataset"]])),
        output:
            units=res("vision/semantics/{model}.csv"),
            evidence=res("evidence/semantics/{model}.csv"),
            grid_png=report(
                res("figures/semantics_grid_{model}.png"),
                caption="../report/semantics_grid.rst",
                category="Vision",
                subcategory="semantics",
            ),
            grid_pdf=res("figures/semantics_grid_{model}.pdf"),
        log:
            res("logs/vision_semantics/{model}.log"),
        benchmark:
            res("benchmarks/vision_semantics/{model}.tsv")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=120,
            gpu=GPUS,
        params:
            model=lambda wc: wc.model,
            sites=lambda wc: config["sae"]["sites"][wc.model],
            sae_names=lambda wc: sae_names(wc.model),
            primary=lambda wc: sae_primary(wc.model),
            control=lambda wc: untrained_controls().get(wc.model),
            control_primary=lambda wc: (
                sae_primary(untrained_controls()[wc.model])
                if wc.model in untrained_controls()
                else None
            ),
            id_dataset=VISION["id_dataset"],
            dataset_spec=dataset_spec(VISION["id_dataset"]),
            attributes=VISION.get("attributes", []),
            settings=vision_setting("semantics"),
            namer=lambda wc: namer_of(wc.model),
            namer_spec=lambda wc: (
                model_spec(namer_of(wc.model)) if namer_of(wc.model) else None
            ),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/vision_semantics.py"

    rule vision_ood_detection:
        input:
            unpack(
                vision_inputs(
                    "ood_detection",
                    [
                        VISION["id_dataset"],
                        VISION["train_dataset"],
                        *VISION["ood_detection"]["ood_datasets"],
                        *ood_controls(),
                    ],
                )
            ),
        output:
            res("vision/ood_detection/{model}.csv"),
            evidence=res("evidence/ood_detection/{model}.csv"),
            latents=res("vision/ood_detection/{model}_latents.csv"),
        log:
            res("logs/vision_ood_detection/{model}.log"),
        benchmark:
            res("benchmarks/vision_ood_detection/{model}.tsv")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=120,
            gpu=GPUS,
        params:
            model=lambda wc: wc.model,
            sites=lambda wc: config["sae"]["sites"][wc.model],
            sae_names=lambda wc: sae_names(wc.model),
            primary=lambda wc: sae_primary(wc.model),
            train_dataset=VISION["train_dataset"],
            id_dataset=VISION["id_dataset"],
            max_train=VISION.get("max_train_images"),
            probe=vision_setting("probe"),
            settings=vision_setting("ood_detection"),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/vision_ood_detection.py"

    rule vision_ood_generalization:
        input:
            unpack(
                vision_inputs(
                    "ood_generalization",
                    [
                        VISION["id_dataset"],
                        VISION["train_dataset"],
                        *VISION["ood_generalization"]["test_datasets"],
                    ],
                )
            ),
        output:
            res("vision/ood_generalization/{model}.csv"),
            evidence=res("evidence/ood_generalization/{model}.csv"),
            latents=res("vision/ood_generalization/{model}_latents.csv"),
        log:
            res("logs/vision_ood_generalization/{model}.log"),
        benchmark:
            res("benchmarks/vision_ood_generalization/{model}.tsv")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=240,
            gpu=GPUS,
        params:
            model=lambda wc: wc.model,
            sites=lambda wc: config["sae"]["sites"][wc.model],
            sae_names=lambda wc: sae_names(wc.model),
            primary=lambda wc: sae_primary(wc.model),
            train_dataset=VISION["train_dataset"],
            id_dataset=VISION["id_dataset"],
            max_train=VISION.get("max_train_images"),
            probe=vision_setting("probe"),
            settings=vision_setting("ood_generalization"),
            attributes=VISION.get("attributes", []),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/vision_ood_generalization.py"

    rule vision_ontology:
        input:
            unpack(
                vision_inputs(
                    "ontology", [VISION["id_dataset"], VISION["train_dataset"]]
                )
            ),
        output:
            metrics=res("vision/ontology/{model}.csv"),
            units=res("vision/ontology/{model}_units.csv"),
            evidence=res("evidence/ontology/{model}.csv"),
        log:
            res("logs/vision_ontology/{model}.log"),
        benchmark:
            res("benchmarks/vision_ontology/{model}.tsv")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled_mem(16000),
            runtime=60,
            gpu=GPUS,
        params:
            model=lambda wc: wc.model,
            sites=lambda wc: config["sae"]["sites"][wc.model],
            sae_names=lambda wc: sae_names(wc.model),
            primary=lambda wc: sae_primary(wc.model),
            train_dataset=VISION["train_dataset"],
            id_dataset=VISION["id_dataset"],
            max_train=VISION.get("max_train_images"),
            settings=vision_setting("ontology"),
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/vision_ontology.py"

    rule semantics_table:
        input:
            tables=expand(res("vision/semantics/{model}.csv"), model=VISION["models"]),
        output:
            table=report(
                res("tables/semantics.csv"),
                caption="../report/semantics.rst",
                category="Vision",
                subcategory="semantics",
            ),
            purity_png=report(
                res("figures/semantics_purity.png"),
                caption="../report/semantics_purity.rst",
                category="Vision",
                subcategory="semantics",
            ),
            purity_pdf=res("figures/semantics_purity.pdf"),
        log:
            res("logs/semantics_table.log"),
        benchmark:
            res("benchmarks/semantics_table.tsv")
        conda:
            ENV
        resources:
            mem_mb=4000,
            runtime=10,
        params:
            task="semantics",
        script:
            "../scripts/vision_table.py"

    rule ood_detection_table:
        input:
            tables=expand(
                res("vision/ood_detection/{model}.csv"), model=VISION["models"]
            ),
        output:
            table=report(
                res("tables/ood_detection.csv"),
                caption="../report/ood_detection.rst",
                category="Vision",
                subcategory="OOD detection",
            ),
            auroc_png=report(
                res("figures/ood_detection_auroc.png"),
                caption="../report/ood_detection_auroc.rst",
                category="Vision",
                subcategory="OOD detection",
            ),
            auroc_pdf=res("figures/ood_detection_auroc.pdf"),
        log:
            res("logs/ood_detection_table.log"),
        benchmark:
            res("benchmarks/ood_detection_table.tsv")
        conda:
            ENV
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            task="ood_detection",
        script:
            "../scripts/vision_table.py"

    rule ood_generalization_table:
        input:
            tables=expand(
                res("vision/ood_generalization/{model}.csv"), model=VISION["models"]
            ),
        output:
            table=report(
                res("tables/ood_generalization.csv"),
                caption="../report/ood_generalization.rst",
                category="Vision",
                subcategory="OOD generalization",
            ),
            accuracy_png=report(
                res("figures/ood_generalization_accuracy.png"),
                caption="../report/ood_generalization_accuracy.rst",
                category="Vision",
                subcategory="OOD generalization",
            ),
            accuracy_pdf=res("figures/ood_generalization_accuracy.pdf"),
            topk_png=report(
                res("figures/ood_generalization_topk.png"),
                caption="../report/ood_generalization_topk.rst",
                category="Vision",
                subcategory="OOD generalization",
            ),
            topk_pdf=res("figures/ood_generalization_topk.pdf"),
        log:
            res("logs/ood_generalization_table.log"),
        benchmark:
            res("benchmarks/ood_generalization_table.tsv")
        conda:
            ENV
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            task="ood_generalization",
        script:
            "../scripts/vision_table.py"

    rule ontology_table:
        input:
            tables=expand(res("vision/ontology/{model}.csv"), model=VISION["models"]),
            units=expand(
                res("vision/ontology/{model}_units.csv"), model=VISION["models"]
            ),
        output:
            table=report(
                res("tables/ontology.csv"),
                caption="../report/ontology.rst",
                category="Vision",
                subcategory="ontology",
            ),
            coverage_png=report(
                res("figures/ontology_coverage.png"),
                caption="../report/ontology_coverage.rst",
                category="Vision",
                subcategory="ontology",
            ),
            coverage_pdf=res("figures/ontology_coverage.pdf"),
            heights_png=report(
                res("figures/ontology_heights.png"),
                caption="../report/ontology_heights.rst",
                category="Vision",
                subcategory="ontology",
            ),
            heights_pdf=res("figures/ontology_heights.pdf"),
        log:
            res("logs/ontology_table.log"),
        benchmark:
            res("benchmarks/ontology_table.tsv")
        conda:
            ENV
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            task="ontology",
        script:
            "../scripts/vision_table.py"

    if VISION["hierarchy"]["source"] == "wordnet":

        rule wordnet_hierarchy:
            output:
                res("data/wordnet/hierarchy.tsv"),
            log:
                res("logs/wordnet_hierarchy.log"),
            benchmark:
                res("benchmarks/wordnet_hierarchy.tsv")
            localrule: True
            conda:
                ENV
            resources:
                mem_mb=2000,
                runtime=30,
            params:
                is_a=canonical(VISION["hierarchy"]["is_a"]),
                words=canonical(VISION["hierarchy"]["words"]),
            script:
                "../scripts/wordnet_hierarchy.py"
