"""The text-encoder collector: a diffusion pipeline's CLIP text encoder on prompt corpora.

The encoder and tokenizer load from a diffusers pipeline folder or hub id (`text_encoder/`
and `tokenizer/`, as Stable Diffusion ships them), so the world's pipeline and SD 1.5 take
the same path. Sites are `L{layer}_{tokens}` with tokens "all" (every prompt token after the
start token), "eot" or positions (`L{layer}_p2-3`); see `saeprobe.diffusion.hooks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.backbones.base import site_name
from saeprobe.backbones.collector import Collector, ListBatch, SiteRows, list_batches
from saeprobe.data.prompts import load_prompts
from saeprobe.diffusion.hooks import capture, token_mask
from saeprobe.world.hf_text import tokenize_with_mask


class PromptSet:
    """An ordered list of prompts; manifest: index, prompt."""

    def __init__(self, prompts: Sequence[str], name: str) -> None:
        self.prompts = list(prompts)
        self.name = name
        self.manifest = pd.DataFrame({"index": np.arange(len(prompts)), "prompt": self.prompts})

    def __len__(self) -> int:
        return len(self.prompts)

    def iter_batches(self, ranges, num_workers=0, pin_memory=False, prefetch=True):
        return list_batches(self.prompts, ranges)


class TextEncoderCollector(Collector):
    """spec: {source: world_diffusion | diffusers, name (pipeline folder or hub id), layers,
    tokens, dtype}."""

    def __init__(self, spec: Mapping, device: torch.device) -> None:
        from transformers import CLIPTextModel, CLIPTokenizer

        self.spec = dict(spec)
        self.device = device
        dtype = self.spec.get("dtype", "auto")
        if dtype == "auto":
            torch_dtype = torch.float16 if device.type == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        source = str(self.spec["name"])
        revision = self.spec.get("revision")
        self.tokenizer = CLIPTokenizer.from_pretrained(
            source, subfolder="tokenizer", revision=revision
        )
        self.encoder = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", dtype=torch_dtype, revision=revision
        )
        self.encoder.to(device).eval()
        self.layers = [int(v) for v in self.spec["layers"]]
        self.tokens = self.spec.get("tokens", "all")
        n_layers = self.encoder.config.num_hidden_layers
        bad = [v for v in self.layers if not 0 <= v < n_layers]
        if bad:
            raise ValueError(
                f"layers {bad} out of range for {source}: its text encoder has {n_layers} "
                f"blocks (0-based layers 0..{n_layers - 1})"
            )

    def sites(self) -> list[str]:
        return [site_name(layer, self.tokens) for layer in self.layers]

    def open(self, dataset_spec: Mapping, seed: int) -> PromptSet:
        spec = dict(dataset_spec)
        return PromptSet(load_prompts(spec, seed), spec.get("name", spec["source"]))

    def max_rows_per_example(self, site: str) -> int:
        return int(self.tokenizer.model_max_length)

    @torch.no_grad()
    def collect(self, batch: ListBatch) -> dict[str, SiteRows]:
        """prompts -> per layer (chosen tokens, d) rows with their position and token id."""
        input_ids, attention_mask = tokenize_with_mask(self.tokenizer, batch.items)
        mask = token_mask(attention_mask, self.tokens)
        with capture(self.encoder, self.layers) as store:
            self.encoder(input_ids=input_ids.to(self.device))
        where = mask.nonzero().numpy()
        example = batch.indices[where[:, 0]]
        token_ids = input_ids[mask].numpy()
        return {
            site_name(layer, self.tokens): SiteRows(
                store[layer][mask.to(store[layer].device)].float(),
                example,
                position=where[:, 1],
                token_id=token_ids,
            )
            for layer in self.layers
        }

    def token_words(self, token_ids: Sequence[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "num_layers": self.encoder.config.num_hidden_layers,
            "width": self.encoder.config.hidden_size,
            "context_length": int(self.tokenizer.model_max_length),
        }


def load_text_encoder(spec: Mapping, device: torch.device) -> TextEncoderCollector:
    if spec["source"] == "world_diffusion" and not Path(spec["name"]).is_dir():
        raise FileNotFoundError(f"{spec['name']}: the world diffusion pipeline is not there")
    return TextEncoderCollector(spec, device)
