# SAE training, one rule for every model family: a whole sweep per (model, site) from one
# stream of batches; then quality metrics per site and one table.


rule train_saes:
    input:
        train=lambda wc: activation_dir(
            wc.model, sae_dataset(wc.model, "train_dataset")
        ),
        held_out=lambda wc: activation_dir(
            wc.model, sae_dataset(wc.model, "eval_dataset")
        ),
    output:
        res("saes/{model}/{site}/sweep.json"),
    log:
        res("logs/train_saes/{model}/{site}.log"),
    benchmark:
        res("benchmarks/train_saes/{model}/{site}.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=lambda wc, attempt: 480 * attempt,
        gpu=GPUS,
    params:
        site=lambda wc: wc.site,
        sae_dirs=lambda wc: sae_dir_map(wc.model, wc.site),
        sweep=lambda wc: sae_sweep(wc.model),
        train=lambda wc: sae_train(wc.model),
        normalize_modalities=lambda wc: sae_override(wc.model).get(
            "normalize_modalities", False
        ),
        export_saelens=config["sae"]["export_saelens"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_saes.py"


rule eval_saes:
    input:
        unpack(eval_sae_inputs),
    output:
        quality=res("saes/{model}/{site}/quality.csv"),
        evidence=res("evidence/reconstruction/{model}/{site}.csv"),
    log:
        res("logs/eval_saes/{model}/{site}.log"),
    benchmark:
        res("benchmarks/eval_saes/{model}/{site}.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=120,
        gpu=GPUS,
    params:
        model_name=lambda wc: wc.model,
        site=lambda wc: wc.site,
        sae_dirs=lambda wc: sae_dir_map(wc.model, wc.site),
        primary=lambda wc: sae_primary(wc.model),
        controls=lambda wc: (wc.model, wc.site) in judged_sae_sites(),
        sae=lambda wc: sae_sweep(wc.model)[sae_primary(wc.model)],
        train=lambda wc: sae_train(wc.model),
        model=lambda wc: model_spec(wc.model),
        dataset=lambda wc: dataset_spec(sae_dataset(wc.model, "eval_dataset")),
        downstream=lambda wc: config["sae"]["downstream"]
        and family(wc.model) == "vision",
        batch_size=config["extract"]["batch_size"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/eval_saes.py"


rule sae_quality_table:
    input:
        quality_files(),
    output:
        table=report(
            res("tables/sae_quality.csv"),
            caption="../report/sae_quality.rst",
            category="SAE quality",
        ),
        png=report(
            res("figures/sae_quality.png"),
            caption="../report/sae_quality_figure.rst",
            category="SAE quality",
        ),
        pdf=res("figures/sae_quality.pdf"),
    log:
        res("logs/sae_quality_table.log"),
    benchmark:
        res("benchmarks/sae_quality_table.tsv")
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/sae_quality_table.py"
