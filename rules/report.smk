# The study's summary (results/RESULTS.md) and a figure gallery; `snakemake --report` then
# builds results/report.html from every report()-annotated output.


rule report_results:
    input:
        tables=lambda wc: [t for t in task_outputs() if t.endswith(".csv")],
        evidence=lambda wc: evidence_files(),
    output:
        results=report(
            res("RESULTS.md"),
            caption="../report/results.rst",
            category="Summary",
        ),
        claims=report(
            res("tables/claims.csv"),
            caption="../report/claims.rst",
            category="Summary",
        ),
        evidence=res("tables/evidence.csv"),
        figure=report(
            res("figures/claims.png"),
            caption="../report/claims_figure.rst",
            category="Summary",
        ),
        figure_pdf=res("figures/claims.pdf"),
    log:
        res("logs/report_results.log"),
    benchmark:
        res("benchmarks/report_results.tsv")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        setting=lambda wc: "the synthetic world" if uses_world() else "the paper config",
        # the latent atlas (rules/atlas.smk), linked from RESULTS.md
        atlas=lambda wc: (
            os.path.relpath(atlas_targets()[0], RESULTS) if atlas_targets() else None
        ),
    script:
        "../scripts/report_results.py"


rule figures_index:
    input:
        figures=lambda wc: [t for t in task_outputs() if t.endswith(".png")]
        + [res("figures/claims.png")],
    output:
        res("figures/index.html"),
    log:
        res("logs/figures_index.log"),
    benchmark:
        res("benchmarks/figures_index.tsv")
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/figures_index.py"
