# Activation extraction: one forward pass per (model, dataset) writes every configured site.


rule extract_activations:
    input:
        unpack(extract_inputs),
    output:
        directory("results/activations/{model}/{dataset}"),
    log:
        "results/logs/extract_activations/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_activations/{model}/{dataset}.tsv"
    conda:
        ENV
    threads: 1 + config["extract"]["num_workers"]
    resources:
        mem_mb=scaled_mem(16000),
        runtime=lambda wc, attempt: 240 * attempt,
        gpu=GPUS,
    params:
        model=lambda wc: model_spec(wc.model),
        dataset=lambda wc: dataset_spec(wc.dataset),
        settings=extract_settings(),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/extract_activations.py"
