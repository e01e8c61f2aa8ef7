"""Tiny random-init models in each library's own on-disk format, with the paper models' depth.

Each keeps the depth (so the paper config's `layers` and SAE sites exist) and the interface of
the model it stands in for, at a width of a few dozen:

- open_clip ViT-L-14 (24 vision blocks): an open_clip `local-dir:` folder, the layout of an
  open_clip model on the HF hub (`open_clip_config.json` with `model_cfg` + `preprocess_cfg`,
  `open_clip_model.safetensors`), with open_clip's own BPE tokenizer (vocabulary 49408);
- DINOv2-B/14 (12 blocks): a transformers `Dinov2Model` folder with its `BitImageProcessor`;
- Stable Diffusion v1.5: a diffusers `StableDiffusionPipeline` folder whose `text_encoder` is a
  `CLIPTextModel` of SD 1.5's layout (12 blocks, 77 positions, vocabulary 49408, EOT pooling)
  with a `CLIPTokenizer` on the same BPE; a tiny VAE and UNet;
- LLaVA-1.5-7B (32 decoder blocks): a transformers `LlavaForConditionalGeneration` folder with
  its `LlavaProcessor` (a word-level tokenizer over the given words).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from saeprobe.io import atomic_save_tensors, atomic_write_json

IMAGE_SIZE = 16
PATCH_SIZE = 4
VOCAB_SIZE = 49408  # CLIP's BPE vocabulary (open_clip and SD 1.5's tokenizer)

OPEN_CLIP_VIT_L14 = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": IMAGE_SIZE,
        "layers": 24,
        "width": 32,
        "head_width": 16,
        "patch_size": PATCH_SIZE,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": VOCAB_SIZE,
        "width": 16,
        "heads": 2,
        "layers": 1,
    },
}


def save_open_clip(out: Path, seed: int = 0) -> Path:
    """A random CLIP of ViT-L-14's depth as open_clip's `local-dir:` folder; returns the weights
    file (`out/open_clip_model.safetensors`)."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**OPEN_CLIP_VIT_L14).eval()
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "open_clip_model.safetensors"
    atomic_save_tensors(weights, {k: v.clone() for k, v in model.state_dict().items()})
    preprocess = {
        "size": [IMAGE_SIZE, IMAGE_SIZE],
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    atomic_write_json(
        out / "open_clip_config.json",
        {"model_cfg": OPEN_CLIP_VIT_L14, "preprocess_cfg": preprocess},
    )
    return weights


def save_dinov2(out: Path, seed: int = 0, layers: int = 12) -> Path:
    """A random `Dinov2Model` (by default of DINOv2-B/14's depth, 12 blocks) + its image
    processor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    Dinov2Model(config).eval().save_pretrained(out, safe_serialization=True)
    BitImageProcessor(
        size={"shortest_edge": IMAGE_SIZE + IMAGE_SIZE // 7},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(out)
    return out


def save_stable_diffusion(out: Path, seed: int = 0) -> Path:
    """A `StableDiffusionPipeline` folder (safetensors) whose text encoder has SD 1.5's layout."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from saeprobe.world.diffusion import (
        WorldDiffusionConfig,
        build_pipeline,
        build_unet,
        build_vae,
        save_pipeline,
    )
    from saeprobe.world.hf_text import build_tokenizer

    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=12,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    text_encoder = CLIPTextModel(text_config).eval()
    tokenizer = build_tokenizer(77)
    cfg = WorldDiffusionConfig(vae_channels=(8, 16), unet_channels=(16, 32), attention_head_dim=4)
    vae = build_vae(cfg, IMAGE_SIZE)
    unet = build_unet(cfg, IMAGE_SIZE // 2, text_config.hidden_size)
    save_pipeline(build_pipeline(vae, text_encoder, tokenizer, unet, cfg), out)
    return out


def save_llava(
    out: Path,
    words: list[str],
    seed: int = 0,
    layers: int = 32,
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
) -> Path:
    """A random `LlavaForConditionalGeneration` (by default of LLaVA-1.5-7B's depth, 32 decoder
    blocks) around a tiny CLIP vision tower read at its penultimate block as LLaVA-1.5 does, +
    its processor (word-level tokenizer over `words`)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from saeprobe.world.llava_model import TinyLlamaSpec, build_processor, build_world_llava

    torch.manual_seed(seed)
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            hidden_act="gelu",
        )
    )
    processor = build_processor(words, image_size, patch_size, "default")
    spec = TinyLlamaSpec(
        hidden=32, layers=layers, heads=2, intermediate=64, vision_feature_layer=-2
    )
    model = build_world_llava(vision, processor, spec, seed=seed).eval()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
