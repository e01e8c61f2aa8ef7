"""Tiny random-init models saved in each library's own format, for tests (never downloaded)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import torch

from saeprobe.io import atomic_save_tensors, atomic_write_json
from saeprobe.rehearsal.models import save_dinov2
from saeprobe.world.clip import save_world_clip

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def tiny_open_clip(seed: int = 0) -> open_clip.CLIP:
    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_OPEN_CLIP).eval()


def save_tiny_open_clip(path: Path, seed: int = 0) -> Path:
    """A random tiny CLIP saved as the world CLIP is: open_clip config + safetensors."""
    save_world_clip(tiny_open_clip(seed), TINY_OPEN_CLIP, path)
    return path


# preprocessing unlike open_clip's defaults, so a test sees it carried over from the folder
TINY_OPEN_CLIP_PREPROCESS = {
    "size": [16, 16],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bilinear",
    "resize_mode": "squash",
}


def save_tiny_open_clip_local_dir(path: Path, seed: int = 0) -> Path:
    """A random tiny CLIP as an open_clip `local-dir:` folder (the layout of an open_clip model
    on the HF hub: `open_clip_config.json` with model_cfg + preprocess_cfg, and the weights)."""
    model = tiny_open_clip(seed)
    path.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(
        path / "open_clip_model.safetensors", {k: v.clone() for k, v in model.state_dict().items()}
    )
    atomic_write_json(
        path / "open_clip_config.json",
        {"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": TINY_OPEN_CLIP_PREPROCESS},
    )
    return path


def save_tiny_hf_clip_vision(path: Path, seed: int = 0) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
        projection_dim=8,
    )
    CLIPVisionModel(config).save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    ).save_pretrained(path)
    return path


def save_tiny_hf_clip_full(path: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 64,
            "max_position_embeddings": 8,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 4,
        },
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    ).save_pretrained(path)
    return path


def save_tiny_dinov2(path: Path, seed: int = 0) -> Path:
    """A random 3-block `Dinov2Model` + its image processor, as the rehearsal saves DINOv2."""
    return save_dinov2(path, seed, layers=3)


def write_world_split(root: Path, split: str, n: int, size: int = 16, seed: int = 0) -> Path:
    """A fake world split: random images.npy (n, size, size, 3) uint8 + manifest.csv."""
    rng = np.random.default_rng(seed)
    split_dir = root / split
    split_dir.mkdir(parents=True, exist_ok=True)
    np.save(split_dir / "images.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    shapes = np.array(["circle", "square", "triangle"])[np.arange(n) % 3]
    pd.DataFrame(
        {"index": np.arange(n), "label": [f"shape:{s}" for s in shapes], "shape": shapes}
    ).to_csv(split_dir / "manifest.csv", index=False)
    return root


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: the test machine's two cores are shared with other jobs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def collect_prompts(pipe_dir, prompts, layers, tokens="all", batch_size=256):
    """Text-encoder rows of `prompts` through the shared collector, in memory.

    Returns ({layer: (rows, d) float32}, table: prompt, position, token_id, token).
    """
    import numpy as np
    import pandas as pd
    import torch

    from saeprobe.backbones.collector import ListBatch
    from saeprobe.backbones.text_encoder import TextEncoderCollector
    from saeprobe.sites import site_name

    collector = TextEncoderCollector(
        {"source": "diffusers", "name": str(pipe_dir), "layers": list(layers), "tokens": tokens},
        torch.device("cpu"),
    )
    acts = {layer: [] for layer in layers}
    tables = []
    for start in range(0, len(prompts), batch_size):
        items = list(prompts[start : start + batch_size])
        batch = ListBatch(np.arange(start, start + len(items)), items)
        rows = collector.collect(batch)
        for layer in layers:
            site = rows[site_name(layer, tokens)]
            acts[layer].append(site.acts.numpy())
        first = next(iter(rows.values()))
        tables.append(
            pd.DataFrame(
                {
                    "prompt": first.example,
                    "position": first.position,
                    "token_id": first.token_id,
                    "token": collector.token_words(first.token_id),
                }
            )
        )
    table = pd.concat(tables, ignore_index=True)
    return {layer: np.concatenate(a) for layer, a in acts.items()}, table


@torch.no_grad()
def open_clip_block_outputs(visual: torch.nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """open_clip's residual stream: [after ln_pre, after block 0, ...], each (n, 1 + P, width).

    pixels: (n, 3, H, W) normalised.
    """
    x = visual.conv1(pixels)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    outs = [x]
    for block in visual.transformer.resblocks:
        x = block(x)
        outs.append(x)
    return outs
