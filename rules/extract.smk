# Activation extraction, one rule for every model family: one pass of a model over a dataset
# writes every configured site into one store (saeprobe.activations).


rule extract_activations:
    input:
        unpack(extract_inputs),
    output:
        directory(res("activations/{model}/{dataset}")),
    log:
        res("logs/extract_activations/{model}/{dataset}.log"),
    benchmark:
        res("benchmarks/extract_activations/{model}/{dataset}.tsv")
    conda:
        ENV
    threads: 1 + config["extract"]["num_workers"]
    resources:
        mem_mb=scaled_mem(32000),
        runtime=lambda wc, attempt: 240 * attempt,
        gpu=GPUS,
    params:
        model=lambda wc: model_spec(wc.model),
        dataset=lambda wc: dataset_spec(wc.dataset),
        settings=lambda wc: extract_settings(wc.model, wc.dataset),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/extract_activations.py"
