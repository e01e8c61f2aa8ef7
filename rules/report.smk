# The study's summary (results/RESULTS.md) and a figure gallery; `snakemake --report` then
# builds results/report.html from every report()-annotated output.


rule report_results:
    input:
        tables=lambda wc: [t for t in task_outputs() if t.endswith(".csv")],
    output:
        report(
            "results/RESULTS.md",
            caption="../report/results.rst",
            category="Summary",
        ),
    log:
        "results/logs/report_results.log",
    benchmark:
        "results/benchmarks/report_results.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        setting=lambda wc: "the synthetic world" if uses_world() else "the paper config",
    script:
        "../scripts/report_results.py"


rule figures_index:
    input:
        figures=lambda wc: [t for t in task_outputs() if t.endswith(".png")],
    output:
        "results/figures/index.html",
    log:
        "results/logs/figures_index.log",
    benchmark:
        "results/benchmarks/figures_index.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/figures_index.py"
