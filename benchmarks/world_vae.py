"""Benchmark: can the world diffusion model's VAE alone keep colour and shape?

Trains only the VAE of `diffusion.world_model` (`saeprobe.world.diffusion.train_vae`) on the
world's train split, reconstructs test images of the train shapes from their posterior means and
judges the reconstructions as `world_diffusion_samples` judges samples (nearest named colour of
the chromatic pixels; the world CLIP's zero-shot shape). The real images give the ceiling. A
diffusion model cannot draw what its VAE cannot reconstruct, and this takes a minute or two
instead of a full training. The last line printed is a JSON object.

  python benchmarks/world_vae.py --results results --set vae_norm_groups=8 --set kl_weight=1e-5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from saeprobe.diffusion.experiment import load_scorer, world_colours
from saeprobe.diffusion.metrics import clip_scores, colour_fractions
from saeprobe.world.clip import PROMPTS
from saeprobe.world.diffusion import WorldDiffusionConfig, to_pixels, train_vae


def judge(images: np.ndarray, manifest: pd.DataFrame, vocab: dict, scorer) -> dict[str, float]:
    """Colour and shape accuracy of uint8 images (n, H, W, 3) against manifest's labels."""
    colours, shapes = list(vocab["colours"]), list(vocab["train_shapes"])
    frac = colour_fractions(images, world_colours(vocab))
    nearest = np.stack([frac[c] for c in colours], 1).argmax(1)
    text = scorer.texts([PROMPTS["shape"].format(s) for s in shapes])
    pred = clip_scores(scorer.images(images), text).argmax(1).numpy()
    colour_ok = np.array(colours)[nearest] == manifest["colour"].to_numpy()
    shape_ok = np.array(shapes)[pred] == manifest["shape"].to_numpy()
    out = {"colour": float(colour_ok.mean()), "shape": float(shape_ok.mean())}
    for c in colours:
        out[f"colour:{c}"] = float(colour_ok[manifest["colour"].to_numpy() == c].mean())
    for s in shapes:
        out[f"shape:{s}"] = float(shape_ok[manifest["shape"].to_numpy() == s].mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--results", default="results", help="a results root with world/ and models/")
    ap.add_argument("--set", action="append", default=[], help="world_model key=JSON value")
    ap.add_argument("--n", type=int, default=600, help="test images judged")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    conf = yaml.safe_load(Path(args.config).read_text())
    section = dict(conf["diffusion"]["world_model"])
    for item in args.set:
        key, value = item.split("=", 1)
        section[key] = json.loads(value)
    cfg = WorldDiffusionConfig.from_dict(section, seed=conf["seed"], threads=args.threads)
    root = Path(args.results)
    vocab = json.loads((root / "world/vocab.json").read_text())
    scorer = load_scorer({"source": "world"}, root / "models/world_clip", torch.device("cpu"))
    manifest = pd.read_csv(root / "world/test/manifest.csv")
    keep = manifest["shape"].isin(vocab["train_shapes"]).to_numpy()
    images = np.load(root / "world/test/images.npy")[keep][: args.n]
    manifest = manifest[keep].iloc[: args.n].reset_index(drop=True)
    train = to_pixels(np.load(root / "world/train/images.npy"))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        vae, _ = train_vae(cfg, train, Path(work), torch.device("cpu"))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        recon = vae.decode(vae.encode(to_pixels(images)).latent_dist.mean).sample
    recon = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    result = {
        "settings": section,
        "vae_seconds": round(seconds, 1),
        "pixel_rmse": float(np.sqrt(((recon.astype(float) - images) ** 2).mean())),
        "real": judge(images, manifest, vocab, scorer),
        "reconstructed": judge(recon, manifest, vocab, scorer),
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
