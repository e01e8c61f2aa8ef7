"""The world CLIP's vision tower as a transformers `CLIPVisionModel` (config + converted weights).

open_clip's `VisionTransformer` (conv1, class_embedding, positional_embedding, ln_pre,
transformer.resblocks[i] with a fused attention in_proj, ln_post) maps one to one onto HF's
`CLIPVisionModel` (embeddings.patch_embedding / class_embedding / position_embedding,
pre_layrnorm, encoder.layers[i].self_attn.{q,k,v,out}_proj, layer_norm1/2, mlp.fc1/fc2,
post_layernorm). open_clip's MLP uses exact GELU (it was not built with quick_gelu), so the HF
config says `hidden_act="gelu"`. `hidden_states[i + 1]` of the HF model equals the output of
open_clip's block i; `hidden_states[0]` is the embedding after ln_pre.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import CLIPVisionConfig, CLIPVisionModel

from saeprobe.world.clip import load_world_clip


def clip_vision_config(vision_cfg: dict[str, Any]) -> CLIPVisionConfig:
    """HF config for an open_clip `vision_cfg` ({"image_size", "layers", "width", "head_width",
    "patch_size", "mlp_ratio"}) of a plain ViT with CLS pooling and exact GELU."""
    width = int(vision_cfg["width"])
    head_width = int(vision_cfg.get("head_width", 64))
    if width % head_width:
        raise ValueError(f"vision width {width} is not a multiple of head_width {head_width}")
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(width * float(vision_cfg.get("mlp_ratio", 4.0))),
        num_hidden_layers=int(vision_cfg["layers"]),
        num_attention_heads=width // head_width,
        image_size=int(vision_cfg["image_size"]),
        patch_size=int(vision_cfg["patch_size"]),
        num_channels=3,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=width,
    )


def convert_visual_state(visual: dict[str, Tensor], layers: int) -> dict[str, Tensor]:
    """open_clip `model.visual.state_dict()` -> `CLIPVisionModel.state_dict()` keys and shapes.

    `proj` (the image-embedding projection) has no place in CLIPVisionModel and is dropped.
    """
    out = {
        "embeddings.patch_embedding.weight": visual["conv1.weight"],
        "embeddings.class_embedding": visual["class_embedding"],
        "embeddings.position_embedding.weight": visual["positional_embedding"],
        "pre_layrnorm.weight": visual["ln_pre.weight"],
        "pre_layrnorm.bias": visual["ln_pre.bias"],
        "post_layernorm.weight": visual["ln_post.weight"],
        "post_layernorm.bias": visual["ln_post.bias"],
    }
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        qw, kw, vw = visual[src + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = visual[src + "attn.in_proj_bias"].chunk(3, dim=0)
        out.update(
            {
                dst + "self_attn.q_proj.weight": qw,
                dst + "self_attn.k_proj.weight": kw,
                dst + "self_attn.v_proj.weight": vw,
                dst + "self_attn.q_proj.bias": qb,
                dst + "self_attn.k_proj.bias": kb,
                dst + "self_attn.v_proj.bias": vb,
                dst + "self_attn.out_proj.weight": visual[src + "attn.out_proj.weight"],
                dst + "self_attn.out_proj.bias": visual[src + "attn.out_proj.bias"],
                dst + "layer_norm1.weight": visual[src + "ln_1.weight"],
                dst + "layer_norm1.bias": visual[src + "ln_1.bias"],
                dst + "layer_norm2.weight": visual[src + "ln_2.weight"],
                dst + "layer_norm2.bias": visual[src + "ln_2.bias"],
                dst + "mlp.fc1.weight": visual[src + "mlp.c_fc.weight"],
                dst + "mlp.fc1.bias": visual[src + "mlp.c_fc.bias"],
                dst + "mlp.fc2.weight": visual[src + "mlp.c_proj.weight"],
                dst + "mlp.fc2.bias": visual[src + "mlp.c_proj.bias"],
            }
        )
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def check_convertible(visual: torch.nn.Module) -> None:
    """Raise ValueError when the open_clip tower has parts CLIPVisionModel cannot express."""
    problems = []
    if getattr(visual, "attn_pool", None) is not None:
        problems.append("attentional pooling")
    if getattr(visual, "pool_type", "tok") != "tok":
        problems.append(f"pool_type {visual.pool_type!r}")
    block = visual.transformer.resblocks[0]
    if not isinstance(block.ls_1, torch.nn.Identity):
        problems.append("layer scale")
    act = block.mlp.gelu if hasattr(block.mlp, "gelu") else None
    if not isinstance(act, torch.nn.GELU) or act.approximate != "none":
        problems.append(f"MLP activation {act!r} (expected exact GELU)")
    if problems:
        raise ValueError("open_clip vision tower not convertible: " + ", ".join(problems))


def vision_model_from_open_clip(
    visual: torch.nn.Module, vision_cfg: dict[str, Any]
) -> CLIPVisionModel:
    """A CLIPVisionModel (eval mode, float32) with the weights of open_clip's `visual`."""
    check_convertible(visual)
    config = clip_vision_config(vision_cfg)
    model = CLIPVisionModel(config)
    state = convert_visual_state(visual.state_dict(), config.num_hidden_layers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def world_clip_vision_model(model_dir: str | Path) -> CLIPVisionModel:
    """The vision tower of the world CLIP saved in `model_dir`, as a CLIPVisionModel."""
    import json

    model, _, _ = load_world_clip(model_dir, device="cpu")
    with open(Path(model_dir) / "open_clip_config.json") as fh:
        vision_cfg = json.load(fh)["vision_cfg"]
    return vision_model_from_open_clip(model.visual, vision_cfg)
