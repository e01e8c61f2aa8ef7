"""Reading and steering the residual stream of a CLIP text encoder with forward hooks.

The hooked module is `encoder_layers(text_encoder)[layer]` (transformers' CLIPEncoderLayer,
`text_encoder.text_model.encoder.layers[layer]`): its output is the residual stream after that
block. The same code serves Stable Diffusion's CLIPTextModel and the world's converted one.

Tokens: "all" = every non-padding prompt token after the start token (the start token's state
is the same for every prompt: position 0 under a causal mask), "eot" = the end-of-text token,
"sequence" = every position of the context, start token and padding included (the UNet
cross-attends to all of them: Stable Diffusion's 77), or a list of positions (those inside the
prompt).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from saeprobe.world.hf_text import encoder_layers

Tokens = str | Sequence[int]


def token_mask(attention_mask: Tensor, tokens: Tokens) -> Tensor:
    """Bool (n, ctx): the chosen token positions of each prompt.

    attention_mask: (n, ctx) 1 on prompt tokens (start and end tokens included), 0 on padding.
    """
    am = attention_mask.bool()
    n, ctx = am.shape
    pos = torch.arange(ctx).expand(n, ctx)
    length = am.sum(1, keepdim=True)
    if tokens == "all":
        return am & (pos > 0)
    if tokens == "eot":
        return pos == (length - 1)
    if tokens == "sequence":
        return torch.ones(n, ctx, dtype=torch.bool)
    if isinstance(tokens, str):
        raise ValueError(
            f"tokens: expected 'all', 'eot', 'sequence' or a list of positions, got {tokens!r}"
        )
    mask = torch.zeros(n, ctx, dtype=torch.bool)
    for p in tokens:
        if not 0 <= int(p) < ctx:
            raise ValueError(f"tokens: position {p} outside the context length {ctx}")
        mask[:, int(p)] = True
    return mask & am


def _hidden(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, hidden: Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def capture(text_encoder: torch.nn.Module, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Within the block, every forward stores the residual stream after each layer in the
    returned dict: {layer: (n, ctx, d)} (the last forward's)."""
    store: dict[int, Tensor] = {}
    blocks = encoder_layers(text_encoder)
    handles = []
    for layer in layers:

        def hook(_m, _i, output, layer=layer):
            store[layer] = _hidden(output).detach()

        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def steer(
    text_encoder: torch.nn.Module,
    layer: int,
    mask: Tensor,
    delta: Tensor | None = None,
    clamp: tuple[Any, int, float] | None = None,
) -> Iterator[None]:
    """Within the block, the residual stream after `layer` is changed at `mask`'s positions.

    mask: (n, ctx) bool; the next forwards must have n prompts. Exactly one of:
    delta: (d,) or (n, d) added at every chosen token (add mode: strength * direction);
    clamp: (sae, latent, value): the latent's code is set to `value` at the chosen tokens and the
    change of the SAE's reconstruction is added (the SAE's error term is kept).
    """
    if (delta is None) == (clamp is None):
        raise ValueError("steer: give exactly one of delta and clamp")

    def hook(_m, _i, output):
        h = _hidden(output)
        m = mask.to(h.device)
        if m.shape != h.shape[:2]:
            raise ValueError(f"steer: mask {tuple(m.shape)} does not match states {h.shape[:2]}")
        if delta is not None:
            d = delta.to(h.device, h.dtype)
            d = d.view(1, 1, -1) if d.ndim == 1 else d[:, None, :]
            return _replace(output, h + m[..., None].to(h.dtype) * d)
        sae, latent, value = clamp
        x = h[m].float()
        codes = sae.encode(x)
        change = (value - codes[:, latent])[:, None] * sae.W_dec[latent][None, :] / sae.input_scale
        out = h.clone()
        out[m] = (x + change).to(h.dtype)
        return _replace(output, out)

    handle = encoder_layers(text_encoder)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def latent_direction(sae: Any, latent: int) -> Tensor:
    """(d,) raw-activation change per unit of the latent's code: W_dec[latent] / input_scale."""
    return (sae.W_dec[latent] / sae.input_scale).detach().float()
