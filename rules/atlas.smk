# The latent atlas: per SAE a static page of every alive latent (saeprobe.atlas), read on the
# SAE's evaluation dataset, with what each task wrote about each latent; thumbnails once per
# dataset. One job for every SAE of the config.


rule atlas:
    input:
        unpack(atlas_inputs),
    output:
        index=res("atlas/index.html"),
        pages=directory(res("atlas/saes")),
        media=directory(res("atlas/media")),
    log:
        res("logs/atlas.log"),
    benchmark:
        res("benchmarks/atlas.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled_mem(16000),
        runtime=60,
    params:
        saes=atlas_saes(),
        tables=canonical(atlas_tables()),
        crossmodal=atlas_crossmodal(),
        settings=canonical(config.get("atlas", {})),
        setting=lambda wc: "the synthetic world" if uses_world() else "the paper config",
    script:
        "../scripts/atlas.py"
