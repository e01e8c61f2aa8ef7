"""Train the world LLaVA to caption the world's images, checkpointing and resuming after a kill.

LLaVA's recipe in three stages, the loss always on the caption tokens and `</s>` only, the
vision tower always frozen, AdamW with warmup and cosine decay per stage:

0. text pretraining (`text_steps`): the language model learns to caption from words,
   "USER: <the image's colour, shape and background words, shuffled>\\nASSISTANT: <caption>";
1. feature alignment (`align_steps`): the language model is frozen and only the projector is
   trained on "USER: <image>\\nASSISTANT: <caption>", so the projector must map image features
   to inputs the text-trained model reads as those words (LLaVA-1.5's stage 1);
2. fine-tuning (`steps`): projector and language model together on the image prompt.

With `shuffle_captions` (the crossmodal claim's negative control, set by the model spec, not by
the `mllm.world_llava` section) the images of stages 1 and 2 are permuted once (seeded), so each
caption comes with another image; stage 0, text only, is unchanged.

Batches of step s come from a seeded permutation per epoch, so a resumed run sees the same
batches as an uninterrupted one. Checkpoints (`{out_dir}/checkpoint/`, a `saeprobe.training`
set: trainable weights, Adam state, the loss curve) are written every `checkpoint_every` steps
and removed when the model is saved; one made with other settings or other inputs (the world's
train split and vocabulary, the world CLIP) is discarded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from saeprobe.backbones.mllm import PROMPT
from saeprobe.config import FromConfig, load_sections
from saeprobe.data.pairs import WORLD_ATTRIBUTES, Examples, caption_words, world_examples
from saeprobe.io import atomic_write_json
from saeprobe.training import (
    Checkpoints,
    Fingerprint,
    load_optimizer_tensors,
    optimizer_tensors,
    warmup_cosine,
)
from saeprobe.world.clip import CONFIG_FILE, WEIGHTS_FILE
from saeprobe.world.generate import load_vocab, split_files
from saeprobe.world.hf_vision import world_clip_vision_model
from saeprobe.world.llava_model import TinyLlamaSpec, build_processor, build_world_llava

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionerConfig(FromConfig):
    """Training of the world LLaVA (the `mllm.world_llava` config section minus the model, which
    is `TinyLlamaSpec`; `world_llava_configs` reads the section into both)."""

    config_key = "mllm.world_llava"

    text_steps: int = 300
    align_steps: int = 400
    steps: int = 200
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    checkpoint_every: int = 100
    train_examples: int | None = None
    eval_examples: int = 1000
    shuffle_captions: bool = False
    seed: int = 0


def world_llava_configs(
    section: Mapping[str, Any], seed: int, key: str = "mllm.world_llava"
) -> tuple[CaptionerConfig, TinyLlamaSpec]:
    """The `mllm.world_llava` section read into its training settings and its model; keys of
    neither are a ConfigError naming them."""
    return load_sections((CaptionerConfig, TinyLlamaSpec), section, key, seed=seed)


def stage_of(step: int, cfg: CaptionerConfig) -> tuple[int, int, int]:
    """(stage 0/1/2, step within the stage, steps of the stage) of global step `step`."""
    bounds = (cfg.text_steps, cfg.align_steps, cfg.steps)
    for stage, n in enumerate(bounds):
        if step < n:
            return stage, step, n
        step -= n
    raise ValueError("step beyond the last stage")


CHECKPOINT_DIR = "checkpoint"
# settings that do not change the trained weights
_NOT_IN_FINGERPRINT = ("checkpoint_every", "eval_examples")


def llava_fingerprint(
    cfg: CaptionerConfig, spec: TinyLlamaSpec, n: int, world_dir: str | Path, clip_dir: str | Path
) -> Fingerprint:
    """The settings the weights depend on and the content of the files training reads."""
    train = {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_FINGERPRINT}
    world, clip = Path(world_dir), Path(clip_dir)
    inputs = list(split_files(world, "train"))
    inputs += [world / "vocab.json", clip / WEIGHTS_FILE, clip / CONFIG_FILE]
    return Fingerprint.of({"cfg": train, "spec": asdict(spec), "n": n}, inputs)


def world_words(world_dir: str | Path) -> list[str]:
    """Every word a world caption can contain (all shapes, colours, backgrounds, superclasses)."""
    vocab = load_vocab(world_dir)
    words = set(vocab["shapes"]) | set(vocab["colours"]) | set(vocab["backgrounds"])
    words |= set(vocab["superclasses"]) | {"a", "on", "background", "shape"}
    return sorted(words)


def encode_captions(
    processor: LlavaProcessor, captions: list[str], images: list[Any]
) -> dict[str, torch.Tensor]:
    """Processor batch of PROMPT + caption + eos, with `labels` (-100 outside caption + eos)."""
    eos = processor.tokenizer.eos_token
    texts = [f"{PROMPT} {c}{eos}" for c in captions]
    batch = processor(images=images, text=texts, padding=True, return_tensors="pt")
    prompt_len = len(processor(images=images[:1], text=[PROMPT])["input_ids"][0])
    return _with_labels(dict(batch), [prompt_len] * len(captions))


def encode_word_prompts(
    processor: LlavaProcessor, examples: Examples, seed: int
) -> dict[str, torch.Tensor]:
    """Text-only batch "USER: <shuffled attribute words>\\nASSISTANT: <caption></s>" + labels."""
    tok = processor.tokenizer
    rng = np.random.default_rng(seed)
    texts, prompt_lens = [], []
    for _, row in examples.table.iterrows():
        words = list(rng.permutation([row["colour"], row["shape"], row["background"]]))
        prompt = PROMPT.replace("<image>", " ".join(words))
        prompt_lens.append(len(tok(prompt)["input_ids"]))
        texts.append(f"{prompt} {row['caption']}{tok.eos_token}")
    batch = tok(texts, padding=True, return_tensors="pt")
    return _with_labels(dict(batch), prompt_lens)


def _with_labels(batch: dict[str, torch.Tensor], prompt_lens: list[int]) -> dict[str, Any]:
    labels = batch["input_ids"].clone()
    for r, n in enumerate(prompt_lens):
        labels[r, :n] = -100
    labels[batch["attention_mask"] == 0] = -100
    batch["labels"] = labels
    return batch


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Rows of step `step`: consecutive slices of a seeded permutation per epoch."""
    per_epoch = n // batch_size
    epoch, i = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[i * batch_size : (i + 1) * batch_size]


def train_world_llava(
    cfg: CaptionerConfig,
    spec: TinyLlamaSpec,
    world_dir: str | Path,
    clip_dir: str | Path,
    out_dir: str | Path,
    stop_after: int | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor, dict[str, Any]]:
    """Build, train and save (save_pretrained: model + processor) the world LLaVA in `out_dir`.

    stop_after: raise KeyboardInterrupt after that many steps (tests simulate a kill with it).
    Returns (model in eval mode, processor, info with the loss curve and wall time).
    """
    out_dir = Path(out_dir)
    vision = world_clip_vision_model(clip_dir)
    image_size = vision.config.image_size
    processor = build_processor(
        world_words(world_dir),
        image_size,
        vision.config.patch_size,
        spec.vision_feature_select_strategy,
    )
    model = build_world_llava(vision, processor, spec, cfg.seed)
    train = world_examples(world_dir, "train", cfg.train_examples, cfg.seed)
    n = len(train)
    if cfg.batch_size > n:
        raise ValueError(
            f"config key 'mllm.world_llava.batch_size': at most {n} examples, got {cfg.batch_size}"
        )
    pixels = processor.image_processor(
        images=[train.image(i) for i in range(n)], return_tensors="pt"
    )["pixel_values"]
    if cfg.shuffle_captions:
        pixels = pixels[torch.from_numpy(np.random.default_rng([cfg.seed, 1]).permutation(n))]
    enc = encode_captions(processor, list(train.table["caption"]), [train.image(0)] * n)
    words = encode_word_prompts(processor, train, cfg.seed)
    language = [
        p for nm, p in _trainable(model).items() if "language_model" in nm or "lm_head" in nm
    ]
    decay = [p for nm, p in _trainable(model).items() if p.ndim >= 2 and "norm" not in nm]
    no_decay = [p for nm, p in _trainable(model).items() if not (p.ndim >= 2 and "norm" not in nm)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    ckpts = Checkpoints(
        out_dir / CHECKPOINT_DIR,
        llava_fingerprint(cfg, spec, n, world_dir, clip_dir),
        name="world_llava",
    )
    losses: list[float] = []
    start = 0
    ckpt = ckpts.resume()
    if ckpt is not None:
        with torch.no_grad():
            for name, p in _trainable(model).items():
                p.copy_(ckpt.tensors["model"][name])
        load_optimizer_tensors(opt, ckpt.tensors["optimizer"])
        losses, start = list(ckpt.state["losses"]), ckpt.step
    model.train()
    model.model.vision_tower.eval()
    t0 = time.perf_counter()
    total = cfg.text_steps + cfg.align_steps + cfg.steps
    bar = tqdm(range(start, total), desc="world_llava", mininterval=5.0)
    for step in bar:
        stage, in_stage, stage_steps = stage_of(step, cfg)
        idx = torch.from_numpy(batch_indices(step, cfg.batch_size, n, cfg.seed))
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(
                in_stage, stage_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio
            )
        if stage == 0:
            out = model(**{k: v[idx] for k, v in words.items()})
        else:
            out = model(
                input_ids=enc["input_ids"][idx],
                attention_mask=enc["attention_mask"][idx],
                pixel_values=pixels[idx],
                labels=enc["labels"][idx],
            )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if stage == 1:
            for p in language:
                p.grad = None
        torch.nn.utils.clip_grad_norm_(list(_trainable(model).values()), 1.0)
        opt.step()
        losses.append(float(out.loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            params = {nm: p.detach() for nm, p in _trainable(model).items()}
            ckpts.save(
                done, {"model": params, "optimizer": optimizer_tensors(opt)}, {"losses": losses}
            )
        if stop_after is not None and done - start >= stop_after:
            raise KeyboardInterrupt(f"stopped after {stop_after} steps (as asked)")
    wall = time.perf_counter() - t0
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    ckpts.clear()
    log.info("world LLaVA: steps %d..%d in %.1f s", start, total, wall)
    info = {"config": asdict(cfg), "spec": asdict(spec), "losses": losses, "train_seconds": wall}
    return model, processor, info


@torch.no_grad()
def caption_accuracy(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    examples: Examples,
    split: str,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Teacher-forced accuracy of the caption's attribute words on world examples.

    For each attribute (colour, shape, background) the model's argmax prediction at the
    position before the attribute's word must equal that word; "token" is the accuracy over
    every caption token and `</s>`. Rows: model, attribute, split, accuracy, chance, n.
    """
    vocab = processor.tokenizer.get_vocab()
    table = examples.table
    hits: dict[str, list[bool]] = {a: [] for a in ("colour", "shape", "background", "token")}
    for s in range(0, len(table), batch_size):
        part = table.iloc[s : s + batch_size]
        images = [examples.image(i) for i in part["example"]]
        enc = encode_captions(processor, list(part["caption"]), images)
        labels = enc.pop("labels")
        logits = model(**enc).logits
        pred = logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        mask = target != -100
        hits["token"].extend((pred[mask] == target[mask]).tolist())
        for a in ("colour", "shape", "background"):
            for row, value in enumerate(part[a]):
                pos = (target[row] == vocab[value]).nonzero()
                hits[a].append(bool(pred[row, pos[0, 0]] == vocab[value]))
    chance = {a: 1.0 / table[a].nunique() for a in ("colour", "shape", "background")}
    chance["token"] = float("nan")
    return pd.DataFrame(
        [
            {
                "model": "world_llava",
                "attribute": a,
                "split": split,
                "accuracy": float(np.mean(h)),
                "chance": chance[a],
                "n": len(h),
            }
            for a, h in hits.items()
        ]
    )


def train_and_score_world_llava(
    section: Mapping[str, Any],
    seed: int,
    world_dir: str | Path,
    clip_dir: str | Path,
    out_dir: str | Path,
    info_file: str | Path,
    shuffle_captions: bool = False,
) -> pd.DataFrame:
    """Train the world LLaVA (`train_world_llava`, config and spec both read from the
    `mllm.world_llava` section by `world_llava_configs`) and score its captions on the
    world's test split (`caption_accuracy`).

    Writes `info_file` (the training info with the accuracy rows) and returns the accuracy
    table (model, attribute, split, accuracy, chance, n). shuffle_captions: train on shuffled
    image-caption pairs (CaptionerConfig.shuffle_captions).
    """
    cfg, spec = world_llava_configs({**section, "shuffle_captions": shuffle_captions}, seed)
    model, processor, info = train_world_llava(cfg, spec, world_dir, clip_dir, out_dir)
    test = world_examples(world_dir, "test", cfg.eval_examples, cfg.seed)
    table = caption_accuracy(model, processor, test, "test")
    log.info("caption accuracy on the test split:\n%s", table.to_string())
    atomic_write_json(info_file, {**info, "accuracy": table.to_dict("records")})
    return table


__all__ = [
    "WORLD_ATTRIBUTES",
    "CaptionerConfig",
    "caption_accuracy",
    "caption_words",
    "train_and_score_world_llava",
    "train_world_llava",
]
