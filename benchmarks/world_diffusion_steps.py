"""Benchmark: CPU cost of the world diffusion model's training steps, variant against variant.

Times one VAE step and one UNet step (forward, backward, AdamW) of `diffusion.world_model` and of
each `--variant` (a JSON object of world_model keys over the config's section), on random
inputs of the real shapes, interleaved round by round so that a machine loaded by other jobs
slows every variant alike. Reports the median process CPU time per step and the stage estimate
(steps x median). On a shared machine the whole training's CPU time drifts with the load; this
compares settings at equal load in a minute. The last line printed is a JSON object.

  python benchmarks/world_diffusion_steps.py --variant '{"batch_size": 128, "unet_steps": 450}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from saeprobe.world.diffusion import WorldDiffusionConfig, build_unet, build_vae

IMAGE_SIZE = 32  # the world's images
TEXT_DIM, CONTEXT = 64, 16  # the world CLIP's text width and context length


def unet_step(cfg: WorldDiffusionConfig) -> Callable[[], None]:
    """One UNet training step on random latents (batch_size, C, 8, 8) and text (B, 16, 64)."""
    latent = IMAGE_SIZE // 2 ** (len(cfg.vae_channels) - 1)
    unet = build_unet(cfg, latent, TEXT_DIM).train()
    optim = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    z = torch.randn(cfg.batch_size, cfg.latent_channels, latent, latent)
    text = torch.randn(cfg.batch_size, CONTEXT, TEXT_DIM)
    t = torch.randint(0, cfg.train_timesteps, (cfg.batch_size,))

    def step() -> None:
        loss = unet(z, t, encoder_hidden_states=text).sample.pow(2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def vae_step(cfg: WorldDiffusionConfig) -> Callable[[], None]:
    """One VAE training step on random images (vae_batch_size, 3, 32, 32)."""
    vae = build_vae(cfg, IMAGE_SIZE).train()
    optim = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    x = torch.randn(cfg.vae_batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)

    def step() -> None:
        loss = (vae.decode(vae.encode(x).latent_dist.mean).sample - x).pow(2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument(
        "--variant", action="append", default=[], help="a JSON object of world_model keys"
    )
    ap.add_argument("--rounds", type=int, default=12, help="timed rounds (2 more are discarded)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = dict(yaml.safe_load(Path(args.config).read_text())["diffusion"]["world_model"])
    variants = {"config": base}
    for text in args.variant:
        change = json.loads(text)
        if not isinstance(change, dict):
            raise SystemExit(f"--variant {text!r}: expected a JSON object of world_model keys")
        variants[text] = {**base, **change}
    cfgs = {name: WorldDiffusionConfig.from_dict(section) for name, section in variants.items()}
    steps = {(name, "vae"): vae_step(cfg) for name, cfg in cfgs.items()}
    steps |= {(name, "unet"): unet_step(cfg) for name, cfg in cfgs.items()}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds + 2):
        for key, step in steps.items():
            start = time.process_time()
            step()
            times[key].append(time.process_time() - start)
    result = {}
    for name, cfg in cfgs.items():
        vae = statistics.median(times[name, "vae"][2:])
        unet = statistics.median(times[name, "unet"][2:])
        result[name] = {
            "vae_step_cpu_s": round(vae, 4),
            "unet_step_cpu_s": round(unet, 4),
            "vae_stage_cpu_s": round(vae * cfg.vae_steps, 1),
            "unet_stage_cpu_s": round(unet * cfg.unet_steps, 1),
            "total_cpu_s": round(vae * cfg.vae_steps + unet * cfg.unet_steps, 1),
        }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
