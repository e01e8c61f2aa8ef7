"""Benchmark: activation extraction throughput vs. the bare model forward.

In one process, with the same model, batch size, dtype and images, measure
  * pipeline: `saeprobe.activations.extract`, from the dataset on disk to shards on disk
    (batches + finalisation; model loading excluded, reported as setup_s), and
  * forward: the model alone on preloaded, normalised tensors, run up to the same layers
    (the whole tower when the pooled embedding is extracted).
The last line printed is a JSON object with pipeline_items_per_s, forward_items_per_s and
ratio = pipeline / forward (best of --repeats runs each, runs alternated), and on CPU
pipeline_time_in_model: the share of the pipeline's wall time spent in the model call.

  python benchmarks/extract.py --model world
  python benchmarks/extract.py --model vit-l-14 --device cuda
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.activations import extract
from saeprobe.backbones import Backbone, load_backbone
from saeprobe.backbones.vision import VisionCollector
from saeprobe.data import load_dataset
from saeprobe.device import pick_device
from saeprobe.world.clip import build_world_clip, save_world_clip
from saeprobe.world.config import WorldClipConfig, WorldConfig


def build_model(kind: str, workdir: Path, device: torch.device, precision: str) -> tuple:
    """(model spec, backbone) for a random-weight model of the requested kind."""
    torch.manual_seed(0)
    if kind == "world":
        # the default world CLIP's architecture (config.yaml: world_clip), random weights
        model, _, cfg = build_world_clip(WorldClipConfig(), image_size=WorldConfig().image_size)
        save_world_clip(model, cfg, workdir / "model")
        spec = {"source": "world", "weights": str(workdir / "model")}
    else:
        spec = {"source": "open_clip", "name": "ViT-L-14"}  # no weights: random init
    return spec, load_backbone(spec, device, precision)


def write_images(root: Path, n: int, size: int) -> dict:
    """A world-format split of n random (size, size) images; returns its dataset spec."""
    split = root / "bench"
    split.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(
        split / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3)
    )
    rng = np.random.default_rng(0)
    for a in range(0, n, 1024):
        images[a : a + 1024] = rng.integers(0, 256, images[a : a + 1024].shape, dtype=np.uint8)
    images.flush()
    del images
    pd.DataFrame({"index": np.arange(n), "label": ["x"] * n}).to_csv(
        split / "manifest.csv", index=False
    )
    return {"source": "world", "root": str(root), "split": "bench"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(backbone: Backbone, pixels: torch.Tensor, batch_size: int, spec: dict) -> float:
    """Seconds for the bare open_clip tower over all pixels, up to the last needed block."""
    visual = backbone.model
    last = max(spec["layers"])
    device = backbone.device

    def forward(x: torch.Tensor) -> torch.Tensor:
        if spec["pooled"]:
            return visual(x)
        h = visual._embeds(x)
        for block in visual.transformer.resblocks[: last + 1]:
            h = block(h)
        return h

    with backbone._context():
        forward(pixels[:batch_size])  # warm-up
        sync(device)
        start = time.perf_counter()
        for a in range(0, len(pixels), batch_size):
            forward(pixels[a : a + batch_size])
        sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["world", "vit-l-14"], default="world")
    parser.add_argument("--n-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--dtype", choices=["float16", "float32"], default=None)
    parser.add_argument("--precision", default="auto", help="auto|fp32|bf16|fp16 (autocast)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--tokens", nargs="+", default=["cls"])
    parser.add_argument("--no-pooled", action="store_true")
    parser.add_argument("--shard-images", type=int, default=50000)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    world = args.model == "world"
    n = args.n_images or (8192 if world else 2048)
    batch_size = args.batch_size or (512 if world else 256)
    dtype = args.dtype or ("float32" if world else "float16")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="saeprobe-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    spec, backbone = build_model(args.model, workdir, device, args.precision)
    default_layers = [0, 1, 2] if world else [11, 23]
    spec = {
        **spec,
        "layers": args.layers or default_layers,
        "tokens": args.tokens,
        "pooled": not args.no_pooled,
    }
    size = backbone.preprocess_params.image_size
    dataset_spec = write_images(workdir / "data", n, size)
    dataset = load_dataset(dataset_spec, backbone.preprocess_params)
    (batch,) = dataset.iter_batches([(0, n)], prefetch=False)
    pixels = backbone.prepare(batch.images)
    del batch

    # On CPU, also time the model calls inside the pipeline: the rest of the pipeline's wall
    # time is its own overhead, measured in the same run and so immune to other jobs' load.
    in_model: list[float] = []
    if device.type == "cpu":
        collect = backbone.collect

        def timed_collect(*a: object, **kw: object) -> dict:
            t = time.perf_counter()
            out = collect(*a, **kw)
            in_model.append(time.perf_counter() - t)
            return out

        backbone.collect = timed_collect

    forward_runs, pipeline_runs, setup, model_fracs = [], [], [], []
    for _ in range(args.repeats):
        in_model.clear()
        forward_runs.append(n / time_forward(backbone, pixels, batch_size, spec))
        out = workdir / "acts"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        summary = extract(
            dataset_spec,
            spec,
            out,
            batch_size=batch_size,
            dtype=dtype,
            shard_examples=args.shard_images,
            device=device,
            precision=args.precision,
            progress=False,
            collector=VisionCollector(backbone, spec),
        )
        total = time.perf_counter() - t0
        setup.append(summary["setup_s"])
        pipeline_runs.append(n / (total - summary["setup_s"]))
        if in_model:
            model_fracs.append(sum(in_model) / (total - summary["setup_s"]))
        shutil.rmtree(out, ignore_errors=True)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)

    pipeline, forward = max(pipeline_runs), max(forward_runs)
    result = {
        "benchmark": "extract",
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "dtype": dtype,
        "precision": args.precision,
        "autocast": str(backbone.autocast_dtype) if backbone.autocast_dtype else None,
        "n_images": n,
        "image_size": size,
        "layers": spec["layers"],
        "tokens": spec["tokens"],
        "pooled": spec["pooled"],
        "repeats": args.repeats,
        "pipeline_runs": [round(v, 1) for v in pipeline_runs],
        "forward_runs": [round(v, 1) for v in forward_runs],
        "setup_s": round(min(setup), 3),
        "pipeline_items_per_s": round(pipeline, 1),
        "forward_items_per_s": round(forward, 1),
        "ratio": round(pipeline / forward, 3),
        "pipeline_time_in_model": round(max(model_fracs), 4) if model_fracs else None,
    }
    print(json.dumps(result), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
