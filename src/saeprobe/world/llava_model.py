"""A tiny LLaVA for the synthetic world, built from transformers classes, and the shared loader.

The world LLaVA is `LlavaForConditionalGeneration(LlavaConfig(vision_config=<the world CLIP's
vision tower as a CLIPVisionConfig>, text_config=<a tiny LlamaConfig>))` with the converted
vision weights (frozen), a word-level tokenizer (`tokenizers` WordLevel model wrapped in a
transformers fast tokenizer), a `CLIPImageProcessor` with the world CLIP's preprocessing and a
`LlavaProcessor` that expands `<image>` into one token per image feature. It is saved with
`save_pretrained` and loaded by `load_mllm` through `LlavaForConditionalGeneration.from_pretrained`
and `AutoProcessor.from_pretrained`, the calls the paper config uses for llava-hf/llava-1.5-7b-hf.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    CLIPImageProcessor,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from saeprobe.backbones.mllm import IMAGE_TOKEN, PROMPT
from saeprobe.config import FromConfig

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyLlamaSpec(FromConfig):
    """The tiny language model and how it reads the vision tower.

    hidden: residual width; layers: decoder blocks; heads: attention heads; intermediate: MLP
    width; vision_feature_layer: which CLIP hidden state feeds the projector (-1 = last block);
    vision_feature_select_strategy: "default" (patch tokens only) or "full" (CLS + patches).
    """

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    vision_feature_layer: int = -1
    vision_feature_select_strategy: str = "default"

    config_key = "mllm.world_llava"


def build_tokenizer(words: list[str], max_length: int = 64) -> PreTrainedTokenizerFast:
    """Word-level fast tokenizer over `words` plus SPECIAL_TOKENS and the prompt's words.

    Whitespace splits words; `<image>` is an added special token, so the processor's run of
    `<image><image>...` (no spaces) splits into one token each. add_special_tokens prepends `<s>`.
    """
    vocab: dict[str, int] = {}
    for w in [*SPECIAL_TOKENS, *PROMPT.replace(IMAGE_TOKEN, " ").split(), *words]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
        padding_side="right",
    )
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return fast


def build_processor(
    words: list[str], image_size: int, patch_size: int, strategy: str
) -> LlavaProcessor:
    """Tokenizer + CLIPImageProcessor (resize/crop to image_size, OpenAI mean/std) combined so
    that `<image>` expands to (image_size / patch_size)^2 tokens (+1 with strategy "full")."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(words),
        patch_size=patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )


def build_world_llava(
    vision: CLIPVisionModel, processor: LlavaProcessor, spec: TinyLlamaSpec, seed: int
) -> LlavaForConditionalGeneration:
    """A randomly initialised (seeded) tiny LLaVA around `vision` (its weights copied, frozen)."""
    tokenizer = processor.tokenizer
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    n_patches = (vision.config.image_size // vision.config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision.config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n_patches + (spec.vision_feature_select_strategy == "full"),
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.vision_tower.requires_grad_(False)
    return model
