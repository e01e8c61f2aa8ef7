# SAE training (a whole sweep per site, from one stream of batches) and quality metrics.


rule train_saes:
    input:
        train=lambda wc: f"results/activations/{wc.model}/{config['sae']['train_dataset']}",
        held_out=lambda wc: f"results/activations/{wc.model}/{config['sae']['eval_dataset']}",
    output:
        saes=expand(
            "results/saes/{{model}}/{{site}}/{name}/sae.safetensors", name=sae_names()
        ),
        cfgs=expand("results/saes/{{model}}/{{site}}/{name}/cfg.json", name=sae_names()),
        metrics=expand(
            "results/saes/{{model}}/{{site}}/{name}/metrics.json", name=sae_names()
        ),
    log:
        "results/logs/train_saes/{model}/{site}.log",
    benchmark:
        "results/benchmarks/train_saes/{model}/{site}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=lambda wc, attempt: 480 * attempt,
        gpu=GPUS,
    params:
        sweep=canonical(config["sae"]["sweep"]),
        train=canonical(config["sae"]["train"]),
        export_saelens=config["sae"]["export_saelens"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_saes.py"


rule eval_saes:
    input:
        unpack(eval_sae_inputs),
    output:
        quality=expand(
            "results/saes/{{model}}/{{site}}/{name}/quality.json", name=sae_names()
        ),
    log:
        "results/logs/eval_saes/{model}/{site}.log",
    benchmark:
        "results/benchmarks/eval_saes/{model}/{site}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=120,
        gpu=GPUS,
    params:
        model=lambda wc: model_spec(wc.model),
        dataset=lambda wc: dataset_spec(config["sae"]["eval_dataset"]),
        downstream=config["sae"]["downstream"],
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
            "results/tables/sae_quality.csv",
            caption="../report/sae_quality.rst",
            category="SAE quality",
        ),
        png=report(
            "results/figures/sae_quality.png",
            caption="../report/sae_quality_figure.rst",
            category="SAE quality",
        ),
        pdf="results/figures/sae_quality.pdf",
    log:
        "results/logs/sae_quality_table.log",
    benchmark:
        "results/benchmarks/sae_quality_table.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/sae_quality_table.py"
