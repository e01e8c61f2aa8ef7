"""Snakemake script (rule extract_mllm): image-token and caption-token residual activations.

params: model ({source, name, layers, dtype}), dataset ({source, split, root, max_examples,
offset}), settings (`mllm.extract`), seed, device. output[0]: the directory
(saeprobe.mllm.extract: L{layer}.npy, tokens.csv, examples.csv, thumbnails.npy, metadata.json).
"""

import logging
import sys

import torch

from saeprobe.device import pick_device
from saeprobe.io import atomic_path
from saeprobe.mllm.build import load_mllm
from saeprobe.mllm.data import load_examples
from saeprobe.mllm.extract import extract_tokens, write_extraction

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    torch.set_num_threads(max(1, int(snakemake.threads)))
    p = snakemake.params
    model_spec, settings = dict(p.model), dict(p.settings)
    device = pick_device(p.device)
    model, processor = load_mllm(model_spec["name"], device, model_spec.get("dtype", "float32"))
    examples = load_examples(dict(p.dataset), int(p.seed))
    acts, tokens = extract_tokens(
        model,
        processor,
        examples,
        list(model_spec["layers"]),
        batch_size=int(settings.get("batch_size", 32)),
        max_image_tokens=settings.get("max_image_tokens"),
        seed=int(p.seed),
        dtype=settings.get("dtype", "float32"),
    )
    info = {
        "model": snakemake.wildcards.model,
        "model_spec": model_spec,
        "dataset": snakemake.wildcards.dataset,
        "dataset_spec": dict(p.dataset),
    }
    with atomic_path(snakemake.output[0]) as tmp:
        write_extraction(tmp, acts, tokens, examples, info)
    logging.info("%d rows (%s)", len(tokens), tokens["modality"].value_counts().to_dict())
