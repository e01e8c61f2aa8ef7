# Datasets of the paper config: public archives downloaded with checksums, gated ImageNet from
# a local folder or the HF hub; each is checked before any GPU job reads it.


rule prepare_dataset:
    output:
        res("data/{dataset}.json"),
    log:
        res("logs/prepare_dataset/{dataset}.log"),
    benchmark:
        res("benchmarks/prepare_dataset/{dataset}.tsv")
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=600,
    params:
        spec=lambda wc: dataset_spec(wc.dataset),
        data_dir="data",
    script:
        "../scripts/prepare_dataset.py"


rule download_prompts:
    output:
        res("data/prompts/{file}"),
    log:
        res("logs/download_prompts/{file}.log"),
    benchmark:
        res("benchmarks/download_prompts/{file}.tsv")
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        url=lambda wc: prompt_download(wc.file)["url"],
        sha256=lambda wc: prompt_download(wc.file).get("sha256"),
    script:
        "../scripts/download_prompts.py"
