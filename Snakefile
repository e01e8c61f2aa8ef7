# saeprobe: sparse autoencoders on vision models, from activations to the study's claims.
# Default config: the synthetic world (config.yaml). The study: --configfile configs/paper.yaml.
from snakemake.utils import min_version

min_version("9.27")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/world.smk"
include: "rules/extract.smk"


rule all:
    default_target: True
    input:
        all_targets(),


rule world:
    input:
        world_targets(),


rule activations:
    input:
        activation_dirs(),
