"""Cross-modal statistics of one SAE on a multimodal LLM's image + caption tokens.

params: sae_dir, site, crossmodal (top_m, n_null, min_count, fire_threshold, n_shared_examples),
seed. input.acts: the evaluation store. output: summary, latents, concepts, shared, thumbnails.
"""

from pathlib import Path

from saeprobe.eval.crossmodal import evaluate_crossmodal
from saeprobe.jobs import job

with job(snakemake) as j:
    p = snakemake.params
    evaluate_crossmodal(
        p.sae_dir,
        Path(snakemake.input.acts) / p.site,
        dict(snakemake.output.items()),
        seed=j.seed,
        **dict(p.crossmodal),
    )
