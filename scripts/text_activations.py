"""Snakemake script (rule text_activations): text-encoder residual streams on a prompt corpus.

params: source (pipeline dir or hub id), dtype, corpus (`diffusion.corpus`), text
(`diffusion.text`: layers, tokens, batch_size, heldout_fraction), seed, device. input.corpus:
the world's train manifest or the downloaded corpus file. output: one metadata.json per site
(its directory also gets train.npy, heldout.npy, tokens.csv, prompts.json).
"""

import logging
import sys
from pathlib import Path

import pandas as pd
import torch

from saeprobe.diffusion.pipeline import load_pipeline
from saeprobe.diffusion.text import (
    collect,
    heldout_rows,
    load_prompt_corpus,
    world_captions,
    write_site,
)
from saeprobe.diffusion.workflow import site_name
from saeprobe.io import atomic_write_json

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    p = snakemake.params
    corpus, text = dict(p.corpus), dict(p.text)
    if corpus["source"] == "world":
        manifest = pd.read_csv(snakemake.input.corpus[0], keep_default_na=False)
        prompts = world_captions(manifest, corpus["n_prompts"], p.seed, corpus["captions"])
    else:
        prompts = load_prompt_corpus(
            snakemake.input.corpus[0],
            corpus["column"],
            corpus.get("member"),
            corpus["n_prompts"],
            p.seed,
        )
    pipe = load_pipeline(p.source, p.device, p.dtype)
    tokens = text["tokens"]
    acts, table = collect(pipe, prompts, text["layers"], tokens, text["batch_size"])
    held = heldout_rows(table, len(prompts), text["heldout_fraction"], p.seed)
    for layer, out in zip(text["layers"], snakemake.output, strict=True):
        site_dir = Path(out).parent
        assert site_dir.name == site_name(layer, tokens), (site_dir, layer, tokens)
        atomic_write_json(site_dir / "prompts.json", prompts)
        meta = {"model": p.source, "layer": layer, "tokens": tokens, "n_prompts": len(prompts)}
        write_site(site_dir, acts[layer], table, held, meta)
