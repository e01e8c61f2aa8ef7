"""A tiny open_clip CLIP trained contrastively on the synthetic world, saved in open_clip's format.

The saved directory holds `open_clip_config.json` ({"embed_dim", "vision_cfg", "text_cfg"}, the
file `open_clip.add_model_config` reads) and `open_clip_model.safetensors`; `load_world_clip`
loads it back through `open_clip.create_model_and_transforms`, the loader hub models go through.

Training checkpoints to `{out_dir}/checkpoint/` (`saeprobe.training`: weights, Adam state, the
batch order, position and random state) every `checkpoint_every` steps, so a run killed and
rerun resumes and ends with the weights of an uninterrupted run; a checkpoint made with other
settings or another train split is discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pandas as pd
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.loss import ClipLoss
from tqdm import tqdm

from saeprobe.device import pick_device
from saeprobe.io import atomic_save_tensors, atomic_write_csv, atomic_write_json
from saeprobe.training import (
    Checkpoints,
    Fingerprint,
    load_optimizer_tensors,
    optimizer_tensors,
    warmup_cosine,
)
from saeprobe.world.config import WorldClipConfig
from saeprobe.world.generate import load_split, load_vocab, split_files

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
INFO_FILE = "train_info.json"
CHECKPOINT_DIR = "checkpoint"
# settings that do not change the trained weights (device: a run may resume on another one)
_NOT_IN_FINGERPRINT = ("device", "threads", "eval_splits", "eval_batch_size")
VOCAB_SIZE = 49408  # open_clip's default BPE tokenizer
RESULT_COLUMNS = ("model", "attribute", "split", "accuracy", "chance", "n")

PROMPTS: dict[str, str] = {
    "shape": "a photo of a {}",
    "superclass": "a photo of a {} shape",
    "colour": "a photo of a {} shape",
    "background": "a photo of a shape on a {} background",
}


def open_clip_model_config(cfg: WorldClipConfig, image_size: int) -> dict[str, Any]:
    """The open_clip model config for `cfg`: {"embed_dim", "vision_cfg", "text_cfg"}."""
    if image_size % cfg.patch_size:
        raise ValueError(
            f"config key 'world_clip.patch_size': expected a divisor of the world's image size "
            f"({image_size}), got {cfg.patch_size}"
        )
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": cfg.vision_layers,
            "width": cfg.vision_width,
            "head_width": cfg.vision_head_width,
            "patch_size": cfg.patch_size,
            "mlp_ratio": 4.0,
        },
        "text_cfg": {
            "context_length": cfg.context_length,
            "vocab_size": VOCAB_SIZE,
            "width": cfg.text_width,
            "heads": cfg.text_heads,
            "layers": cfg.text_layers,
        },
    }


def register_model_config(model_cfg: dict[str, Any]) -> str:
    """Register `model_cfg` with open_clip under a content-derived name and return that name.

    Goes through `open_clip.add_model_config` with a file `<name>.json` (open_clip names a
    config by its file stem), so different world models never shadow each other.
    """
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ValueError(f"open_clip model config: missing keys {missing}")
    text = json.dumps(model_cfg, sort_keys=True)
    name = "saeprobe-world-clip-" + hashlib.sha1(text.encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(text)
        open_clip.add_model_config(path)
    return name


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> normalised float32 (N, 3, H, W), as `preprocess` does it."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class CaptionSampler:
    """Re-captions images from their attributes with random phrasing (text augmentation).

    All phrasings are tokenised once; `sample` returns token ids (n, context_length).
    """

    def __init__(
        self,
        cfg: WorldClipConfig,
        tokenizer: Callable[[list[str]], torch.Tensor],
        manifest: pd.DataFrame,
    ):
        self.cfg = cfg
        self.colours = sorted(manifest["colour"].unique())
        self.shapes = sorted(manifest["shape"].unique())
        self.supers = sorted(manifest["superclass"].unique())
        self.backgrounds = sorted(manifest["background"].unique())
        nouns = self.shapes + [f"{s} shape" for s in self.supers] + ["shape"]
        self.nouns = nouns
        self.colour_idx = pd.Categorical(manifest["colour"], self.colours).codes.astype(np.int64)
        self.shape_idx = pd.Categorical(manifest["shape"], self.shapes).codes.astype(np.int64)
        self.super_idx = pd.Categorical(manifest["superclass"], self.supers).codes.astype(np.int64)
        self.bg_idx = pd.Categorical(manifest["background"], self.backgrounds).codes.astype(
            np.int64
        )
        captions = []
        for photo in (0, 1):
            for c in [None, *self.colours]:
                for noun in nouns:
                    for b in [None, *self.backgrounds]:
                        captions.append(self.phrase(photo, c, noun, b))
        self.shape_dims = (2, len(self.colours) + 1, len(nouns), len(self.backgrounds) + 1)
        self.tokens = tokenizer(captions)
        lengths = (self.tokens != 0).sum(1)
        if int(lengths.max()) >= self.tokens.shape[1]:
            raise ValueError(
                f"config key 'world_clip.context_length': captions need more than "
                f"{self.tokens.shape[1] - 1} tokens (e.g. {captions[int(lengths.argmax())]!r})"
            )

    @staticmethod
    def phrase(photo: int, colour: str | None, noun: str, background: str | None) -> str:
        text = ("a photo of a " if photo else "a ") + (f"{colour} " if colour else "") + noun
        return text + (f" on a {background} background" if background else "")

    def sample(self, index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Token ids (len(index), context_length) for the images at `index`."""
        n = len(index)
        cfg = self.cfg
        photo = (rng.random(n) < cfg.caption_photo_p).astype(np.int64)
        show_c = rng.random(n) < cfg.caption_colour_p
        show_b = rng.random(n) < cfg.caption_background_p
        u = rng.random(n)
        noun = self.shape_idx[index].copy()
        use_super = u < cfg.caption_superclass_p
        noun[use_super] = len(self.shapes) + self.super_idx[index][use_super]
        generic = (u >= cfg.caption_superclass_p) & (
            u < cfg.caption_superclass_p + cfg.caption_generic_p
        )
        noun[generic & (show_c | show_b)] = len(self.nouns) - 1
        colour = np.where(show_c, self.colour_idx[index] + 1, 0)
        bg = np.where(show_b, self.bg_idx[index] + 1, 0)
        flat = np.ravel_multi_index((photo, colour, noun, bg), self.shape_dims)
        return self.tokens[torch.from_numpy(flat)]


def clip_fingerprint(cfg: WorldClipConfig, world_dir: str | Path) -> Fingerprint:
    """The settings the weights depend on and the content of the world's train split."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    return Fingerprint.of(settings, list(split_files(world_dir, "train")))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def build_world_clip(
    cfg: WorldClipConfig, image_size: int
) -> tuple[torch.nn.Module, Callable[[list[str]], torch.Tensor], dict[str, Any]]:
    """A randomly initialised (seeded) open_clip CLIP, its tokenizer and model config."""
    model_cfg = open_clip_model_config(cfg, image_size)
    name = register_model_config(model_cfg)
    torch.manual_seed(cfg.seed)
    model = open_clip.create_model(name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(name)
    return model, tokenizer, model_cfg


def train_world_clip(
    cfg: WorldClipConfig,
    world_dir: str | Path,
    out_dir: str | Path | None = None,
    callback: Callable[[int, torch.nn.Module, Callable], None] | None = None,
    checkpoint_every: int = 100,
) -> tuple[torch.nn.Module, Callable[[list[str]], torch.Tensor], dict[str, Any]]:
    """Train the tiny CLIP on the world's train split with open_clip's ClipLoss.

    Returns (model in eval mode, tokenizer, info) where info has the model config, the loss
    curve and the wall time; with `out_dir` the model is also saved there (see `save_world_clip`)
    and training checkpoints to `{out_dir}/checkpoint` every `checkpoint_every` steps (0: never),
    resuming from the newest one; `train_info.json` there holds the training config and info.
    `callback(step, model, tokenizer)` runs after every step and its checkpoint (e.g. to
    monitor accuracy; raising from it stops training as a kill would).
    """
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    images, manifest = load_split(world_dir, "train")
    model, tokenizer, model_cfg = build_world_clip(cfg, images.shape[1])
    model.to(device).train()
    sampler = CaptionSampler(cfg, tokenizer, manifest)
    pixels = images_to_tensor(images)
    loss_fn = ClipLoss()
    optim = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True
    )
    rng = np.random.default_rng(cfg.seed)
    n = len(pixels)
    if cfg.batch_size > n:
        raise ValueError(
            f"config key 'world_clip.batch_size': expected at most the {n} training images, "
            f"got {cfg.batch_size}"
        )
    order, pos = rng.permutation(n), 0
    losses: list[float] = []
    first = 0
    ckpts = None
    if out_dir is not None:
        ckpts = Checkpoints(
            Path(out_dir) / CHECKPOINT_DIR, clip_fingerprint(cfg, world_dir), name="world_clip"
        )
        ckpt = ckpts.resume()
        if ckpt is not None:
            model.load_state_dict(ckpt.tensors["model"])
            load_optimizer_tensors(optim, ckpt.tensors["optimizer"])
            order, pos = ckpt.tensors["data"]["order"].numpy(), int(ckpt.state["pos"])
            rng.bit_generator.state = ckpt.state["rng"]
            losses, first = list(ckpt.state["losses"]), ckpt.step
    start = time.perf_counter()
    bar = tqdm(range(first, cfg.steps), desc="world_clip", mininterval=5.0)
    for step in bar:
        if pos + cfg.batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        x = pixels[torch.from_numpy(idx)].to(device)
        t = sampler.sample(idx, rng).to(device)
        for g in optim.param_groups:
            g["lr"] = warmup_cosine(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
        image_f, text_f, scale = model(x, t)
        loss = loss_fn(image_f, text_f, scale)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        if ckpts is not None and checkpoint_every and done % checkpoint_every == 0:
            if done < cfg.steps:
                ckpts.save(
                    done,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer_tensors(optim),
                        "data": {"order": torch.from_numpy(order)},
                    },
                    {"pos": pos, "rng": rng.bit_generator.state, "losses": losses},
                )
        if callback is not None:
            callback(step, model, tokenizer)
    wall = time.perf_counter() - start
    model.eval()
    log.info(
        "world_clip: steps %d..%d in %.1f s, final loss %.4f", first, cfg.steps, wall, losses[-1]
    )
    info = {"model_cfg": model_cfg, "losses": losses, "train_seconds": wall}
    if out_dir is not None:
        save_world_clip(model, model_cfg, out_dir)
        assert ckpts is not None
        ckpts.clear()
        info_file = Path(out_dir) / INFO_FILE
        atomic_write_json(info_file, {"config": cfg.to_dict(), **info}, sort_keys=False)
    return model, tokenizer, info


def save_world_clip(model: torch.nn.Module, model_cfg: dict[str, Any], out_dir: str | Path) -> None:
    """Write `open_clip_config.json` and `open_clip_model.safetensors` into `out_dir` atomically."""
    out_dir = Path(out_dir)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    atomic_save_tensors(out_dir / WEIGHTS_FILE, state, metadata={"format": "pt"})
    atomic_write_json(out_dir / CONFIG_FILE, model_cfg, sort_keys=False)


def load_world_clip(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Callable, Callable[[list[str]], torch.Tensor]]:
    """Load a saved world CLIP through open_clip's own loader.

    `open_clip.add_model_config` + `open_clip.create_model_and_transforms(name,
    pretrained=<safetensors>)` + `open_clip.get_tokenizer(name)`. Returns (model in eval mode,
    inference preprocess (PIL image -> (3, H, W) tensor), tokenizer (list[str] -> (n, ctx))).
    """
    model_dir = Path(model_dir)
    cfg_path, weights = model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE
    for p in (cfg_path, weights):
        if not p.is_file():
            raise FileNotFoundError(f"world CLIP: missing {p}")
    with open(cfg_path) as fh:
        model_cfg = json.load(fh)
    try:
        name = register_model_config(model_cfg)
    except ValueError as err:
        raise ValueError(f"{cfg_path}: {err}") from err
    if isinstance(device, str):
        device = pick_device(device)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(weights), device=device
    )
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    return model, preprocess, tokenizer


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised image embeddings (N, embed_dim) for uint8 images (N, H, W, 3), on CPU."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images_to_tensor(np.asarray(images[i : i + batch_size])).to(device)
        out.append(model.encode_image(x, normalize=True).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], texts: Sequence[str]
) -> torch.Tensor:
    """L2-normalised text embeddings (len(texts), embed_dim), on CPU."""
    device = next(model.parameters()).device
    return model.encode_text(tokenizer(list(texts)).to(device), normalize=True).float().cpu()


def zero_shot_eval(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    world_dir: str | Path,
    splits: Sequence[str],
    model_name: str = "world_clip",
    batch_size: int = 512,
) -> list[dict[str, Any]]:
    """Zero-shot accuracy per (attribute, split) with prompts over the in-distribution classes.

    Attributes: shape ("a photo of a {shape}"), superclass, colour, background. A split is scored
    on an attribute only when all its labels are among the prompted classes (so no shape accuracy
    on ood_shape, no background accuracy on ood_texture). Rows: RESULT_COLUMNS.
    """
    vocab = load_vocab(world_dir)
    classes = {
        "shape": vocab["train_shapes"],
        "superclass": list(vocab["superclasses"]),
        "colour": vocab["colours"],
        "background": vocab["train_backgrounds"],
    }
    text_f = {
        a: encode_texts(model, tokenizer, [PROMPTS[a].format(c) for c in cs])
        for a, cs in classes.items()
    }
    rows = []
    for split in splits:
        images, manifest = load_split(world_dir, split, mmap=True)
        image_f = encode_images(model, images, batch_size)
        for attribute, cs in classes.items():
            truth = manifest[attribute].to_numpy()
            if not set(truth) <= set(cs):
                continue
            pred = (image_f @ text_f[attribute].T).argmax(1).numpy()
            acc = float(np.mean(np.array(cs, dtype=object)[pred] == truth))
            rows.append(
                {
                    "model": model_name,
                    "attribute": attribute,
                    "split": split,
                    "accuracy": acc,
                    "chance": 1.0 / len(cs),
                    "n": len(truth),
                }
            )
    return rows


def write_results(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write zero-shot rows as CSV (RESULT_COLUMNS) atomically."""
    atomic_write_csv(path, pd.DataFrame(rows, columns=list(RESULT_COLUMNS)))
