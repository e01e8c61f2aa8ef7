"""The multimodal-LLM collector: a LLaVA model's residual stream on image and caption tokens.

One teacher-forced forward of `PROMPT + " " + caption` with the image per example
(`output_hidden_states=True`); the residual stream after language-model block L is
`hidden_states[L + 1]`. Rows: the image tokens (input_ids == image_token_id; at most
`max_image_tokens` per example, a subset seeded by (seed, example)) and the caption's tokens
(after the prompt's own tokens), with modality image or text. Sites: `L{layer}_all`.

A dataset with `text_only: true` is the crossmodal task's text-only control: the same captions
after TEXT_PROMPT (the prompt without `<image>`), no image given, so the caption tokens see no
image; its rows are the caption tokens only, with the same token ids as with the image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from saeprobe.backbones.collector import Collector, ListBatch, SiteRows, list_batches
from saeprobe.data.pairs import Examples, load_examples
from saeprobe.sites import CONTINUATION, MODALITIES

IMAGE_TOKEN = "<image>"
PROMPT = "USER: <image>\nASSISTANT:"  # LLaVA-1.5's conversation format; the caption follows
TEXT_PROMPT = PROMPT.replace(IMAGE_TOKEN, "")  # the text-only control's prompt: no image
IMAGE, TEXT = MODALITIES.index("image"), MODALITIES.index("text")
WORD_MARKERS = "\u2581\u0120"  # sentencepiece and byte-level BPE word-start markers


def clean_word(token: str) -> str:
    """A token's word: lower-cased, without the tokenizer's word-start marker."""
    return token.strip().lstrip(WORD_MARKERS).strip().lower()


def uses_word_markers(tokenizer: Any) -> bool:
    """Whether the tokenizer marks word starts (sentencepiece's or byte-level BPE's marker)."""
    return any(t[:1] in WORD_MARKERS for t in tokenizer.get_vocab() if t)


def piece_words(tokenizer: Any, token_ids: Sequence[int], markers: bool | None = None) -> list[str]:
    """Each token's word (`clean_word`); with a tokenizer that marks word starts, a piece that
    continues a word (no marker, starts with a letter or digit) is CONTINUATION + its text, so
    a word split into several pieces ("giraffe" = "gir" + "##affe" in Llama's vocabulary) can
    be put back together in caption order (`saeprobe.eval.crossmodal.caption_words`)."""
    pieces = tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])
    markers = uses_word_markers(tokenizer) if markers is None else markers
    out = []
    for piece in pieces:
        word = clean_word(piece)
        continues = markers and piece[:1] not in WORD_MARKERS and piece[:1].isalnum()
        out.append(CONTINUATION + word if continues and word else word)
    return out


def image_features_per_image(model: LlavaForConditionalGeneration) -> int:
    """How many image features (LM positions) one image becomes."""
    cfg = model.config
    n = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    return n + (cfg.vision_feature_select_strategy == "full")


class PairSet:
    """(image, caption) examples; manifest: index, example, source_index, caption, concepts,
    and the world's label columns where they exist. With `text_only` a batch's items are
    (None, caption): the captions without their images (thumbnails still show the images)."""

    def __init__(self, examples: Examples, name: str, text_only: bool = False) -> None:
        self.examples = examples
        self.name = name
        self.text_only = text_only
        self.manifest = examples.table.assign(index=examples.table["example"].to_numpy())

    def __len__(self) -> int:
        return len(self.examples)

    def iter_batches(self, ranges, num_workers=0, pin_memory=False, prefetch=True):
        return list_batches(_Lazy(self.examples, self.text_only), ranges)

    def thumbnails(self) -> np.ndarray:
        """uint8 (n, 64, 64, 3), for figures and the atlas."""
        return np.stack([self.examples.thumbnail(i) for i in range(len(self.examples))])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "n_examples": len(self),
            "attributes": self.examples.attributes,
            "text_only": self.text_only,
        }

    def content_key(self) -> str | None:
        """sha256 of the images held in memory (world pairs); None for images read from files."""
        if self.examples.images is None:
            return None
        return hashlib.sha256(np.ascontiguousarray(self.examples.images).tobytes()).hexdigest()


class _Lazy(Sequence):
    """examples[i] -> (image, caption), read when a batch asks for it; (None, caption) with
    `text_only`."""

    def __init__(self, examples: Examples, text_only: bool = False) -> None:
        self.examples = examples
        self.text_only = text_only

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        image = None if self.text_only else self.examples.image(i)
        return image, str(self.examples.table["caption"].iloc[i])


class MLLMCollector(Collector):
    """spec: {source: world_llava | llava, name (folder or hub id), layers, dtype,
    max_image_tokens}."""

    def __init__(self, spec: Mapping, device: torch.device, seed: int = 0) -> None:
        self.spec = dict(spec)
        self.device = device
        self.seed = seed
        self.model, self.processor = load_mllm(
            spec["name"], device, spec.get("dtype", "float32"), spec.get("revision")
        )
        self.layers = [int(v) for v in spec["layers"]]
        n_layers = self.model.config.text_config.num_hidden_layers
        bad = [v for v in self.layers if not 0 <= v < n_layers]
        if bad:
            raise ValueError(
                f"layers {bad} out of range for {spec['name']}: the language model has "
                f"{n_layers} blocks (0-based layers 0..{n_layers - 1})"
            )
        self.max_image_tokens = spec.get("max_image_tokens")
        self._prompt_ids: dict[bool, list[int]] = {}

    def sites(self) -> list[str]:
        return [f"L{layer}_all" for layer in self.layers]

    def open(self, dataset_spec: Mapping, seed: int) -> PairSet:
        spec = dict(dataset_spec)
        name = spec.get("name", spec["source"])
        return PairSet(load_examples(spec, seed), name, bool(spec.get("text_only", False)))

    def max_rows_per_example(self, site: str) -> int:
        text = self.processor.tokenizer.model_max_length
        return image_features_per_image(self.model) + (text if text < 100_000 else 4096)

    def _prompt(self, image: Any) -> list[int]:
        """The prompt's token ids with `image` (None: the text-only prompt)."""
        text_only = image is None
        if text_only not in self._prompt_ids:
            if text_only:
                ids = self.processor(text=[TEXT_PROMPT])["input_ids"][0]
            else:
                ids = self.processor(images=[image], text=[PROMPT])["input_ids"][0]
            self._prompt_ids[text_only] = [int(t) for t in ids]
        return self._prompt_ids[text_only]

    def _positions(self, example: int, seq: list[int], prompt: list[int]) -> tuple[list, list]:
        if seq[: len(prompt)] != prompt:
            raise ValueError(
                f"example {example}: the prompt's tokens are not a prefix of the tokenised "
                "prompt + caption; cannot locate the caption tokens"
            )
        image_id = int(self.model.config.image_token_id)
        img = [i for i, t in enumerate(seq) if t == image_id]
        if self.max_image_tokens is not None and len(img) > self.max_image_tokens:
            rng = np.random.default_rng([self.seed, int(example)])
            img = sorted(rng.choice(img, self.max_image_tokens, replace=False).tolist())
        return img, list(range(len(prompt), len(seq)))

    @torch.no_grad()
    def collect(self, batch: ListBatch) -> dict[str, SiteRows]:
        """(image, caption) pairs -> per layer (image + caption tokens, d) rows; (None, caption)
        pairs (a text-only batch) -> the caption tokens after TEXT_PROMPT."""
        images = [image for image, _ in batch.items]
        text_only = images[0] is None
        if any((image is None) != text_only for image in images):
            raise ValueError("a batch mixes examples with and without images")
        prompt = self._prompt(images[0])
        template = TEXT_PROMPT if text_only else PROMPT
        texts = [f"{template} {caption}" for _, caption in batch.items]
        if text_only:
            inputs = self.processor(text=texts, padding=True, return_tensors="pt")
        else:
            inputs = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            dtype = next(self.model.parameters()).dtype
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        out = self.model(**inputs, output_hidden_states=True)
        ids, mask = inputs["input_ids"].cpu(), inputs["attention_mask"].cpu().bool()
        rows, cols, example, position, token_id, modality = [], [], [], [], [], []
        for r, ex in enumerate(batch.indices):
            real = mask[r].nonzero()[:, 0]
            seq = ids[r, real].tolist()
            img, txt = self._positions(int(ex), seq, prompt)
            for kind, where in ((IMAGE, img), (TEXT, txt)):
                rows += [r] * len(where)
                cols += [int(real[i]) for i in where]
                example += [int(ex)] * len(where)
                position += where
                token_id += [seq[i] for i in where]
                modality += [kind] * len(where)
        rr, cc = torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)
        columns = dict(
            example=np.asarray(example, np.int64),
            position=np.asarray(position, np.int64),
            token_id=np.asarray(token_id, np.int64),
            modality=np.asarray(modality, np.int8),
        )
        return {
            f"L{layer}_all": SiteRows(out.hidden_states[layer + 1][rr, cc].float(), **columns)
            for layer in self.layers
        }

    def token_words(self, token_ids: Sequence[int]) -> list[str]:
        return piece_words(self.processor.tokenizer, token_ids)

    def describe(self) -> dict:
        cfg = self.model.config.text_config
        return {"spec": self.spec, "num_layers": cfg.num_hidden_layers, "width": cfg.hidden_size}


def load_mllm(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    revision: str | None = None,
) -> tuple[LlavaForConditionalGeneration, Any]:
    """(model in eval mode, processor) via from_pretrained, for the world LLaVA and hub models.

    dtype: float32 | float16 | bfloat16 (the paper config loads LLaVA-1.5-7B in float16 on cuda).
    revision: the hub revision to load (None = the default branch).
    """
    torch_dtype = getattr(torch, dtype)
    model = LlavaForConditionalGeneration.from_pretrained(
        str(name_or_path), dtype=torch_dtype, revision=revision
    )
    processor = AutoProcessor.from_pretrained(str(name_or_path), revision=revision)
    model.to(device).eval()
    return model, processor
