# saeprobe: sparse autoencoders on vision models, from activations to the study's claims.
# Default config: the synthetic world (config.yaml). The study: --configfile configs/paper.yaml.
from snakemake.utils import min_version

min_version("9.27")


# --configfile replaces the default instead of being merged into it.
if not config:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/world.smk"
include: "rules/extract.smk"
include: "rules/sae.smk"
include: "rules/vision.smk"
include: "rules/diffusion.smk"
include: "rules/mllm.smk"
include: "rules/report.smk"
include: "rules/atlas.smk"


rule all:
    default_target: True
    input:
        all_targets(),
        vision_targets(),
        diffusion_targets(),
        mllm_targets(),
        report_targets(),
        atlas_targets(),


# The artifact groups DVC shares (dvc.yaml), each under the config's results root.
rule world:
    input:
        world_targets(),


rule data:
    input:
        data_targets(),


rule activations:
    input:
        activation_dirs(),


rule saes:
    input:
        sweep_files(),


rule tables:
    input:
        task_outputs(),
        report_targets(),
        atlas_targets(),
