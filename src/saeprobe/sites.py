"""Model families and site names (torch-free: the workflow reads them at parse time)."""

from __future__ import annotations

from collections.abc import Sequence

# Row modalities of a multimodal store, by their int8 code (an activation store's `modality`).
MODALITIES = ("image", "text")
# prefix of a caption token's word that continues the previous token's word (a word split into
# several tokenizer pieces; saeprobe.backbones.mllm.piece_words)
CONTINUATION = "##"

FAMILIES = {
    "world": "vision",
    "open_clip": "vision",
    "hf": "vision",
    "world_diffusion": "text_encoder",
    "diffusers": "text_encoder",
    "world_llava": "mllm",
    "llava": "mllm",
}


def family_of(source: str) -> str:
    """vision, text_encoder or mllm: the family a model `source` belongs to."""
    if source not in FAMILIES:
        raise ValueError(f"model source: expected one of {list(FAMILIES)}, got {source!r}")
    return FAMILIES[source]


def site_name(layer: int | None, tokens: str | Sequence[int] | None = None) -> str:
    """`L{layer}_{tokens}` for a residual-stream site, `pooled` for the final embedding.

    tokens: a token set (cls, patches, all, mean, eot) or token positions, joined as
    `p{i}-{j}` (e.g. L10_p2-3).
    """
    if layer is None:
        return "pooled"
    if tokens is not None and not isinstance(tokens, str):
        tokens = "p" + "-".join(str(int(p)) for p in tokens)
    return f"L{layer}_{tokens}"
