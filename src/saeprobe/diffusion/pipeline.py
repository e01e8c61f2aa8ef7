"""Loading a text-to-image pipeline and generating from (steered) prompt embeddings.

Both worlds load with `DiffusionPipeline.from_pretrained`: the paper config a hub id
(`stable-diffusion-v1-5/stable-diffusion-v1-5`, fp16 on CUDA), the synthetic world the directory
its training rule wrote. Generation takes prompt embeddings computed by the caller (so steering
hooks on the text encoder can act on the conditional and/or the unconditional branch) and one
seeded generator per image (an image depends on its seed only, not on its batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline

from saeprobe.device import pick_device
from saeprobe.world.hf_text import tokenize_with_mask


def load_pipeline(
    source: str | Path, device: str = "cpu", dtype: str = "auto", revision: str | None = None
) -> Any:
    """A diffusers text-to-image pipeline (hub id or saved directory), no safety checker.

    dtype: "auto" = float16 on CUDA, float32 on CPU; or "float32"/"float16"/"bfloat16".
    revision: the hub revision to load (None = the default branch).
    """
    dev = pick_device(device)
    if dtype == "auto":
        torch_dtype = torch.float16 if dev.type == "cuda" else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    pipe = DiffusionPipeline.from_pretrained(
        str(source),
        revision=revision,
        dtype=torch_dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tokenize_prompts(pipe: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (n, model_max_length), as the pipeline tokenizes."""
    return tokenize_with_mask(pipe.tokenizer, prompts)


@torch.no_grad()
def encode(pipe: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's last hidden states (n, ctx, d): what the UNet cross-attends to."""
    device = pipe.text_encoder.device
    return pipe.text_encoder(input_ids=input_ids.to(device))[0]


@torch.no_grad()
def generate(
    pipe: Any,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor,
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    batch_size: int = 64,
    height: int | None = None,
) -> np.ndarray:
    """uint8 images (n, H, W, 3) from prompt embeddings (n, ctx, d), one seed per image."""
    if len(prompt_embeds) != len(seeds) or len(negative_embeds) != len(seeds):
        raise ValueError("generate: need one seed and one negative embedding per prompt")
    dtype = pipe.unet.dtype
    device = pipe.unet.device
    out = []
    for i in range(0, len(seeds), batch_size):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i : i + batch_size]]
        result = pipe(
            prompt_embeds=prompt_embeds[i : i + batch_size].to(device, dtype),
            negative_prompt_embeds=negative_embeds[i : i + batch_size].to(device, dtype),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=gens,
            output_type="np",
            height=height,
            width=height,
        )
        out.append(np.clip(np.rint(np.asarray(result.images) * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(out)
