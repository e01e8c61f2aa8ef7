"""The world CLIP's open_clip text tower as a transformers `CLIPTextModel` + `CLIPTokenizer`.

A text-to-image pipeline built on the world (saeprobe.world.diffusion) uses the converted text
encoder exactly as Stable Diffusion uses its own `CLIPTextModel`, so the hook code
(`text_encoder.text_model.encoder.layers[layer]`) is the same in both worlds.

Mapping (open_clip -> transformers): token_embedding -> embeddings.token_embedding,
positional_embedding -> embeddings.position_embedding, resblocks.i.{ln_1, ln_2} ->
layers.i.{layer_norm1, layer_norm2}, attn.in_proj (q, k, v stacked) -> self_attn.{q,k,v}_proj,
attn.out_proj -> self_attn.out_proj, mlp.{c_fc, c_proj} -> mlp.{fc1, fc2}, ln_final ->
final_layer_norm, text_projection (x @ P) -> text_projection.weight = P^T. The tokenizer is
built from open_clip's own BPE merges file, pads with id 0 as open_clip does and has
model_max_length = the world CLIP's context length, so both give the same ids.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch
from open_clip.tokenizer import SimpleTokenizer, default_bpe
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

# open_clip's SimpleTokenizer reads this many merges from its BPE file.
N_MERGES = 49152 - 256 - 2
PAD_TOKEN = "!"  # id 0: the padding open_clip's tokenizer writes


def text_config(clip: torch.nn.Module) -> CLIPTextConfig:
    """The `CLIPTextConfig` of an open_clip CLIP's text tower (GELU, causal, argmax-EOT pool)."""
    width = clip.token_embedding.weight.shape[1]
    block = clip.transformer.resblocks[0]
    act = block.mlp.gelu
    if not isinstance(act, torch.nn.GELU) or act.approximate != "none":
        raise ValueError(f"text tower activation {act!r}: only exact GELU is converted")
    return CLIPTextConfig(
        vocab_size=clip.token_embedding.weight.shape[0],
        hidden_size=width,
        intermediate_size=block.mlp.c_fc.out_features,
        projection_dim=clip.text_projection.shape[1],
        num_hidden_layers=len(clip.transformer.resblocks),
        num_attention_heads=block.attn.num_heads,
        max_position_embeddings=clip.positional_embedding.shape[0],
        hidden_act="gelu",
        layer_norm_eps=block.ln_1.eps,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )


def convert_state_dict(clip: torch.nn.Module) -> dict[str, torch.Tensor]:
    """open_clip text-tower tensors renamed for `CLIPTextModelWithProjection`."""
    sd = clip.state_dict()
    out = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t().contiguous(),
    }
    for i in range(len(clip.transformer.resblocks)):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
            out[f"{dst}{b}.weight"] = sd[f"{src}{a}.weight"]
            out[f"{dst}{b}.bias"] = sd[f"{src}{a}.bias"]
        qkv_w = sd[f"{src}attn.in_proj_weight"].chunk(3)
        qkv_b = sd[f"{src}attn.in_proj_bias"].chunk(3)
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), qkv_w, qkv_b, strict=True):
            out[f"{dst}self_attn.{name}.weight"] = w
            out[f"{dst}self_attn.{name}.bias"] = b
        out[f"{dst}self_attn.out_proj.weight"] = sd[f"{src}attn.out_proj.weight"]
        out[f"{dst}self_attn.out_proj.bias"] = sd[f"{src}attn.out_proj.bias"]
        for a, b in (("c_fc", "fc1"), ("c_proj", "fc2")):
            out[f"{dst}mlp.{b}.weight"] = sd[f"{src}mlp.{a}.weight"]
            out[f"{dst}mlp.{b}.bias"] = sd[f"{src}mlp.{a}.bias"]
    return {k: v.detach().clone().float() for k, v in out.items()}


def to_hf_text_model(clip: torch.nn.Module) -> CLIPTextModelWithProjection:
    """The open_clip CLIP's text tower as a `CLIPTextModelWithProjection` (eval mode, fp32).

    `.text_embeds` equals open_clip's `encode_text` (before normalisation); use `.text_model`
    through `CLIPTextModel` (see `to_clip_text_model`) for a diffusion pipeline.
    """
    model = CLIPTextModelWithProjection(text_config(clip))
    missing, unexpected = model.load_state_dict(convert_state_dict(clip), strict=False)
    # position_ids is a non-persistent buffer in recent transformers versions
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"text tower conversion: missing {missing}, unexpected {unexpected}")
    return model.eval()


def to_clip_text_model(clip: torch.nn.Module) -> CLIPTextModel:
    """The open_clip CLIP's text tower as a `CLIPTextModel` (what Stable Diffusion uses)."""
    with_proj = to_hf_text_model(clip)
    model = CLIPTextModel(with_proj.config)
    text_module(model).load_state_dict(with_proj.text_model.state_dict())
    return model.eval()


def text_module(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """The module holding `embeddings`, `encoder`, `final_layer_norm` of a CLIP text model.

    transformers 4.x nests it as `text_encoder.text_model`; 5.x flattens `CLIPTextModel`.
    """
    return getattr(text_encoder, "text_model", text_encoder)


def encoder_layers(text_encoder: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a CLIP text model (`...text_model.encoder.layers`)."""
    return text_module(text_encoder).encoder.layers


def build_tokenizer(context_length: int) -> CLIPTokenizer:
    """A `CLIPTokenizer` from open_clip's own BPE file giving open_clip's ids (padding with 0).

    context_length: the world CLIP's `text_cfg.context_length` (the tokenizer's model_max_length).
    """
    simple = SimpleTokenizer()
    with gzip.open(default_bpe()) as fh:
        merges = fh.read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    # open_clip names its special tokens <start_of_text>/<end_of_text>; HF CLIP's names, same ids
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in simple.encoder.items()}
    return CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split()) for m in merges],
        pad_token=PAD_TOKEN,
        model_max_length=context_length,
    )


def tokenize_with_mask(
    tokenizer: CLIPTokenizer, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (len(texts), model_max_length), padded and truncated as
    Stable Diffusion does."""
    out = tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return out.input_ids, out.attention_mask


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (len(texts), model_max_length), padded and truncated as Stable Diffusion does."""
    return tokenize_with_mask(tokenizer, texts)[0]


def load_world_text_encoder(
    model_dir: str | Path,
) -> tuple[CLIPTextModel, CLIPTokenizer, torch.nn.Module]:
    """(CLIPTextModel, CLIPTokenizer, the open_clip CLIP) from a saved world CLIP directory."""
    from saeprobe.world.clip import load_world_clip

    clip, _, _ = load_world_clip(model_dir, "cpu")
    return to_clip_text_model(clip), build_tokenizer(clip.positional_embedding.shape[0]), clip


__all__ = [
    "build_tokenizer",
    "convert_state_dict",
    "encoder_layers",
    "load_world_text_encoder",
    "text_config",
    "text_module",
    "to_clip_text_model",
    "to_hf_text_model",
    "tokenize",
]
