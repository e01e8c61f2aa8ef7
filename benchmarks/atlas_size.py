"""Benchmark: the latent atlas's size and build time for one paper-sized SAE, from random data.

A random-init TopK SAE (--width latents on --d-in inputs, --k active) read on a store of
--examples random activation rows (one per image, like a CLS site) with random 64 px
thumbnails saved at extraction (noise: the worst case for PNG; photos compress better). The
last line printed is a JSON object: the SAE's page data (data.js) in bytes, the shared thumbnail
sheets in bytes, how many distinct examples the page shows, alive latents and the build time.

  python benchmarks/atlas_size.py                      # 16,384 latents, d_in 1024
  python benchmarks/atlas_size.py --width 256 --d-in 64 --examples 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.atlas.build import AtlasSae, AtlasSettings, build_atlas
from saeprobe.sae.config import SAEConfig
from saeprobe.sae.io import save_sae
from saeprobe.sae.models import build_sae


def random_store(site_dir: Path, n: int, d: int, seed: int) -> None:
    """A one-shard activation store of n random rows (one per example) with 64 px thumbnails."""
    rng = np.random.default_rng(seed)
    site_dir.mkdir(parents=True)
    x = rng.standard_normal((n, d), dtype=np.float32)
    np.save(site_dir / "shard_0.npy", x)
    np.save(site_dir / "example.npy", np.arange(n, dtype=np.int64))
    meta = {
        "dim": d, "dtype": "float32", "site": site_dir.name, "layer": 0,
        "mean": x.mean(axis=0).tolist(), "count": n, "columns": ["example"],
        "shards": [{"file": "shard_0.npy", "rows": n}],
    }  # fmt: skip
    (site_dir / "metadata.json").write_text(json.dumps(meta))
    pd.DataFrame({"index": np.arange(n), "label": "x"}).to_csv(
        site_dir.parent / "examples.csv", index=False
    )
    thumbs = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    np.save(site_dir.parent / "thumbnails.npy", thumbs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--d-in", type=int, default=1024)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--examples", type=int, default=10000)
    parser.add_argument("--top-examples", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thumbnail-format", choices=["png", "jpeg"], default="png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_store(root / "acts/m/val/L0_cls", args.examples, args.d_in, args.seed)
        torch.manual_seed(args.seed)
        sae = build_sae(SAEConfig(arch="topk", width=args.width, k=args.k), args.d_in)
        with torch.no_grad():  # random unit directions, tied encoder and decoder
            w = torch.nn.functional.normalize(torch.randn(args.width, args.d_in), dim=1)
            sae.W_dec.copy_(w)
            sae.W_enc.copy_(w.T)
        save_sae(sae, root / "sae")
        spec = AtlasSae(
            "m", "L0_cls", "sae", "vision", str(root / "sae"), str(root / "acts/m/val/L0_cls"),
            "val", {"source": "imagefolder"},
        )  # fmt: skip
        start = time.perf_counter()
        settings = AtlasSettings(args.top_examples, thumbnail_format=args.thumbnail_format)
        build_atlas([spec], {}, root / "atlas", settings, "a benchmark")
        seconds = time.perf_counter() - start
        page = root / "atlas/saes/m/L0_cls/sae"
        data = json.loads((page / "data.js").read_text().split("= ", 1)[1].rstrip(";\n"))
        media = root / "atlas/media"
        result = {
            "width": args.width,
            "d_in": args.d_in,
            "examples": args.examples,
            "alive": data["sae"]["alive"],
            "data_js_bytes": (page / "data.js").stat().st_size,
            "thumbnail_bytes": sum(p.stat().st_size for p in media.iterdir()),
            "examples_shown": len({e for la in data["latents"] for e, _ in la["top"]}),
            "build_s": round(seconds, 1),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
