"""Cross-modal statistics of one SAE on a multimodal LLM's image + caption tokens.

params: sae_dir, site, crossmodal (top_m, n_null, min_count, fire_threshold, n_shared_examples),
seed. input.acts: the evaluation store; input.text_only (where mllm.text_only names one): the
same captions extracted without their images. output: summary, latents, concepts, shared,
thumbnails.
"""

from pathlib import Path

from saeprobe.eval.crossmodal import evaluate_crossmodal
from saeprobe.jobs import job

with job(snakemake) as j:
    p = snakemake.params
    text_only = getattr(snakemake.input, "text_only", None)
    evaluate_crossmodal(
        p.sae_dir,
        Path(snakemake.input.acts) / p.site,
        dict(snakemake.output.items()),
        seed=j.seed,
        text_only_dir=None if text_only is None else Path(text_only) / p.site,
        **dict(p.crossmodal),
    )
