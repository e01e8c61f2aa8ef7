"""A tiny Stable Diffusion trained on the synthetic world, saved as a diffusers pipeline.

`StableDiffusionPipeline` in miniature: the world CLIP's text tower converted to a
`CLIPTextModel` (saeprobe.world.hf_text, frozen), a tiny `AutoencoderKL` (32 px -> 8x8 latents:
three encoder blocks, no mid-block attention) trained briefly on world images with MSE + a KL
term (0 in the default: a plain autoencoder in AutoencoderKL's format), and a small
`UNet2DConditionModel` trained with a `DDPMScheduler` and classifier-free caption dropout. The
VAE's GroupNorms use few groups (`vae_norm_groups`): with one channel per group the norm
removes each channel's mean over the image, the level that carries the colour, and the
reconstructions merge yellow into orange and cyan into blue. The UNet cross-attends to the text
encoder's last hidden states at its coarse levels (`attend_finest`: at the finest too) and,
with `pooled_text` (diffusers' addition_embed_type="text"), also adds an attention-pooled text
embedding to its time embedding, so the prompt reaches every ResNet block. Uniform v-loss
(`snr_gamma` 0) keeps the weight of the noisiest timesteps, where the shape is decided; min-SNR
weights all but drop them, and `timestep_power` below 1 draws them more often. Sampling uses
`DDIMScheduler` with leading timesteps as SD does (DPM-Solver++ and trailing steps start at
alpha_bar ~ 0 under the cosine schedule, where epsilon prediction is ill-posed; with v, trailing
steps judge no better). Captions are re-drawn every step from the image's attributes
(saeprobe.world.clip.CaptionSampler), so prompts without a colour ("a triangle") or a shape ("a
red shape") are in-distribution.

Both stages checkpoint to `{out_dir}.partial/{vae,unet}/` (`saeprobe.training`: weights and
Adam state) every `checkpoint_every` steps; the batch order and noise of step `s` are a pure
function of (seed, s), so a resumed run ends with the same weights as an uninterrupted one (on
CPU). A checkpoint made with other settings or other inputs (the world's train split; for the
UNet also the world CLIP) is discarded.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from tqdm import tqdm

from saeprobe.config import FromConfig
from saeprobe.device import pick_device
from saeprobe.training import (
    Checkpoints,
    Fingerprint,
    load_optimizer_tensors,
    optimizer_tensors,
    warmup_cosine,
)
from saeprobe.world.clip import CONFIG_FILE, WEIGHTS_FILE, CaptionSampler
from saeprobe.world.config import WorldClipConfig
from saeprobe.world.generate import load_split, split_files
from saeprobe.world.hf_text import load_world_text_encoder, tokenize

log = logging.getLogger(__name__)


RUN_SEED_STRIDE = 100_003  # far apart: run r of one config seed is no run of a nearby seed


@dataclass(frozen=True)
class WorldDiffusionConfig(FromConfig):
    """Settings of the world's text-to-image model (config section `diffusion.world_model`;
    seed, device and threads come from outside it). `from_dict` is `load_section`."""

    config_key = "diffusion.world_model"

    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_norm_groups: int = 1
    latent_channels: int = 4
    vae_steps: int = 300
    vae_batch_size: int = 64
    vae_lr: float = 0.002
    kl_weight: float = 1.0e-5
    unet_channels: tuple[int, ...] = (64, 128)
    attention_head_dim: int = 8
    attend_finest: bool = False
    pooled_text: bool = True
    unet_steps: int = 300
    batch_size: int = 128
    lr: float = 0.001
    warmup_steps: int = 20
    caption_dropout: float = 0.1
    caption_colour_p: float = 0.8
    caption_background_p: float = 0.5
    caption_superclass_p: float = 0.1
    caption_generic_p: float = 0.1
    caption_photo_p: float = 0.3
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    snr_gamma: float = 5.0
    timestep_power: float = 1.0
    ema_decay: float = 0.99
    checkpoint_every: int = 50
    run: int = 0
    seed: int = 0
    device: str = "cpu"
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def train_seed(self) -> int:
        """The seed of the initial weights, batches and noise: the config's seed for run 0, another
        draw for each other run (the same settings and world, another training run)."""
        return self.seed + RUN_SEED_STRIDE * self.run


def build_vae(cfg: WorldDiffusionConfig, image_size: int) -> AutoencoderKL:
    """A tiny AutoencoderKL: (B, 3, S, S) in [-1, 1] <-> (B, latent_channels, S/2^(n-1), ...)."""
    n = len(cfg.vae_channels)
    torch.manual_seed(cfg.train_seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=image_size,
        mid_block_add_attention=False,
    )


def build_unet(cfg: WorldDiffusionConfig, latent_size: int, text_dim: int) -> UNet2DConditionModel:
    """A small UNet2DConditionModel on (B, latent_channels, latent_size, latent_size) latents
    with cross-attention to (B, ctx, text_dim) text states at every level (`attend_finest`) or
    at every level but the finest."""
    n = len(cfg.unet_channels)
    first = "CrossAttn" if cfg.attend_finest else ""
    down = (f"{first}DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + (f"{first}UpBlock2D",)
    torch.manual_seed(cfg.train_seed + 1)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        layers_per_block=1,
        block_out_channels=tuple(cfg.unet_channels),
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=text_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=16,
        addition_embed_type="text" if cfg.pooled_text else None,
        addition_embed_type_num_heads=cfg.attention_head_dim,
    )


def train_scheduler(cfg: WorldDiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=False,
    )


def diffusion_target(
    z0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the UNet predicts from z_t (all (B, C, h, w); alpha_bar (B, 1, 1, 1)): the noise
    ("epsilon") or v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * z0 ("v_prediction")."""
    if prediction_type == "epsilon":
        return noise
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * z0


def train_timesteps(n: int, total: int, power: float, generator: torch.Generator) -> torch.Tensor:
    """n training timesteps (n,) in [0, total): floor(total * u^power), u uniform; power 1 is
    uniform, below 1 draws the noisy end (where the layout is decided) more often."""
    if power == 1.0:
        return torch.randint(0, total, (n,), generator=generator)
    u = torch.rand(n, generator=generator)
    return (u.pow(power) * total).long().clamp_(max=total - 1)


def min_snr_weights(alpha_bar: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (B,) for timesteps with alpha_bar (B,) (Hang et al. 2023):
    min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v; all ones if gamma = 0."""
    if gamma <= 0:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar).clamp_min(1e-8)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema <- d * ema + (1 - d) * model, d = min(decay, (1 + step) / (10 + step))."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - d)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1] (the VAE's input range)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


MIN_LR_RATIO = 0.1  # both stages decay to a tenth of their rate
# settings that do not change the trained weights (device: a run may resume on another one)
_NOT_IN_FINGERPRINT = ("threads", "device", "checkpoint_every")

StepCallback = Callable[[str, int], None]


class _Stage:
    """Checkpointed training of one module in `{work}/{name}/` (a `saeprobe.training` set)."""

    def __init__(
        self,
        name: str,
        module: torch.nn.Module,
        optim: torch.optim.Optimizer,
        work: Path,
        fp: Fingerprint,
        callback: StepCallback | None = None,
        ema_decay: float = 0.0,
    ):
        self.name, self.module, self.optim = name, module, optim
        self.ckpts = Checkpoints(work / name, fp, name=name)
        self.callback = callback
        self.losses: list[float] = []
        self.ema_decay = ema_decay
        self.ema = copy.deepcopy(module).requires_grad_(False) if ema_decay > 0 else None

    def resume(self) -> int:
        """Load the newest checkpoint of this fingerprint; returns its step (0: none)."""
        ckpt = self.ckpts.resume()
        if ckpt is None:
            return 0
        self.module.load_state_dict(ckpt.tensors["model"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.tensors["ema"])
        load_optimizer_tensors(self.optim, ckpt.tensors["optimizer"])
        self.losses = list(ckpt.state["losses"])
        return ckpt.step

    def step(
        self, loss: torch.Tensor, step: int, total: int, lr: float, warmup: int, every: int
    ) -> None:
        """One optimiser step at the schedule's rate; a checkpoint every `every` steps (0: none),
        then the callback (raising from it stops training as a kill would)."""
        for g in self.optim.param_groups:
            g["lr"] = warmup_cosine(step, total, lr, warmup, MIN_LR_RATIO)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        if self.ema is not None:
            ema_update(self.ema, self.module, self.ema_decay, step)
        self.losses.append(loss.item())
        if every and (step + 1) % every == 0:
            self.save(step + 1)
        if self.callback is not None:
            self.callback(self.name, step + 1)

    def final(self) -> torch.nn.Module:
        """The weights to keep: the EMA copy if there is one, else the trained module."""
        return self.ema if self.ema is not None else self.module

    def save(self, step: int) -> None:
        tensors = {"model": self.module.state_dict(), "optimizer": optimizer_tensors(self.optim)}
        if self.ema is not None:
            tensors["ema"] = self.ema.state_dict()
        self.ckpts.save(step, tensors, {"losses": self.losses})


def stage_fingerprint(
    cfg: WorldDiffusionConfig, stage: str, n_images: int, inputs: Sequence[str | Path] = ()
) -> Fingerprint:
    """The settings a stage's weights depend on and the content of its input files."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    return Fingerprint.of({"stage": stage, "n": n_images, **d}, inputs)


def train_vae(
    cfg: WorldDiffusionConfig,
    pixels: torch.Tensor,
    work: Path,
    device: torch.device,
    inputs: Sequence[str | Path] = (),
    callback: StepCallback | None = None,
) -> tuple[AutoencoderKL, list[float]]:
    """Train the VAE on pixels (N, 3, S, S) in [-1, 1]; sets config.scaling_factor = 1/std(z).

    Checkpoints in `{work}/vae/`, keyed on the settings and the content of `inputs` (the files
    the pixels come from). Returns (vae in eval mode, loss curve).
    """
    vae = build_vae(cfg, pixels.shape[-1]).to(device).train()
    optim = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    fp = stage_fingerprint(cfg, "vae", len(pixels), inputs)
    stage = _Stage("vae", vae, optim, work, fp, callback)
    start = stage.resume()
    n = len(pixels)
    for step in tqdm(range(start, cfg.vae_steps), desc="vae", mininterval=5.0):
        rng = np.random.default_rng([cfg.train_seed, 1, step])
        idx = torch.from_numpy(rng.choice(n, cfg.vae_batch_size, replace=False))
        x = pixels[idx].to(device)
        gen = torch.Generator().manual_seed(cfg.train_seed * 7919 + step)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(
            device
        )
        recon = vae.decode(z).sample
        loss = (recon - x).pow(2).mean() + cfg.kl_weight * posterior.kl().mean()
        stage.step(loss, step, cfg.vae_steps, cfg.vae_lr, cfg.warmup_steps, cfg.checkpoint_every)
    vae.eval()
    with torch.no_grad():
        sample = pixels[: min(n, 2048)].to(device)
        z = torch.cat(
            [vae.encode(sample[i : i + 256]).latent_dist.mean for i in range(0, len(sample), 256)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    if cfg.vae_steps > start:
        stage.save(cfg.vae_steps)
    return vae, stage.losses


@torch.no_grad()
def encode_latents(
    vae: AutoencoderKL, pixels: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std (N, C, h, w) of every image, in scaled latent units, on CPU."""
    means, stds = [], []
    s = vae.config.scaling_factor
    for i in range(0, len(pixels), 512):
        post = vae.encode(pixels[i : i + 512].to(device)).latent_dist
        means.append((post.mean * s).cpu())
        stds.append((post.std * s).cpu())
    return torch.cat(means), torch.cat(stds)


def train_world_diffusion(
    cfg: WorldDiffusionConfig,
    world_dir: str | Path,
    clip_dir: str | Path,
    out_dir: str | Path,
    callback: StepCallback | None = None,
) -> dict[str, Any]:
    """Train VAE then UNet on the world's train split; save the pipeline to `out_dir`.

    Returns info (loss curves, wall times). The pipeline in `out_dir` loads with
    `DiffusionPipeline.from_pretrained(out_dir)`. `callback(stage, steps_done)` ("vae" or
    "unet") runs after every step and its checkpoint; raising from it stops training as a kill
    would, and a rerun resumes.
    """
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    images, manifest = load_split(world_dir, "train")
    clip_dir = Path(clip_dir)
    images_file, manifest_file = split_files(world_dir, "train")
    unet_inputs = [
        images_file,
        manifest_file,
        clip_dir / WEIGHTS_FILE,
        clip_dir / CONFIG_FILE,
    ]
    pixels = to_pixels(images)
    text_encoder, tokenizer, _ = load_world_text_encoder(clip_dir)
    text_encoder.to(device).requires_grad_(False)
    start = time.perf_counter()
    vae, vae_losses = train_vae(cfg, pixels, work, device, [images_file], callback)
    vae_seconds = time.perf_counter() - start
    vae.requires_grad_(False)
    lat_mean, lat_std = encode_latents(vae, pixels, device)
    latent_size = lat_mean.shape[-1]

    sampler_cfg = WorldClipConfig.from_dict(
        {
            k: getattr(cfg, k)
            for k in (
                "caption_colour_p",
                "caption_background_p",
                "caption_superclass_p",
                "caption_generic_p",
                "caption_photo_p",
            )
        }
    )
    sampler = CaptionSampler(sampler_cfg, lambda texts: tokenize(tokenizer, texts), manifest)
    empty = tokenize(tokenizer, [""])
    unet = build_unet(cfg, latent_size, text_encoder.config.hidden_size).to(device).train()
    optim = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    noise_sched = train_scheduler(cfg)
    alphas = noise_sched.alphas_cumprod.to(device)
    fp = stage_fingerprint(cfg, "unet", len(lat_mean), unet_inputs)
    stage = _Stage("unet", unet, optim, work, fp, callback, cfg.ema_decay)
    first = stage.resume()
    n = len(lat_mean)
    t0 = time.perf_counter()
    for step in tqdm(range(first, cfg.unet_steps), desc="unet", mininterval=5.0):
        rng = np.random.default_rng([cfg.train_seed, 2, step])
        index = rng.choice(n, cfg.batch_size, replace=False)
        tokens = sampler.sample(index, rng)
        drop = torch.from_numpy(rng.random(cfg.batch_size) < cfg.caption_dropout)
        tokens[drop] = empty
        gen = torch.Generator().manual_seed(cfg.train_seed * 104729 + step)
        idx = torch.from_numpy(index)
        eps_z = torch.randn(lat_mean[idx].shape, generator=gen)
        z0 = (lat_mean[idx] + lat_std[idx] * eps_z).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = train_timesteps(cfg.batch_size, cfg.train_timesteps, cfg.timestep_power, gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with torch.no_grad():
            cond = text_encoder(input_ids=tokens.to(device)).last_hidden_state
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        target = diffusion_target(z0, noise, a, cfg.prediction_type)
        weight = min_snr_weights(a.view(-1), cfg.snr_gamma, cfg.prediction_type)
        loss = ((pred - target).pow(2).mean((1, 2, 3)) * weight).mean()
        stage.step(loss, step, cfg.unet_steps, cfg.lr, cfg.warmup_steps, cfg.checkpoint_every)
    unet_seconds = time.perf_counter() - t0
    unet = stage.final().eval()
    pipe = build_pipeline(vae, text_encoder, tokenizer, unet, cfg)
    save_pipeline(pipe, out_dir)
    shutil.rmtree(work, ignore_errors=True)
    log.info("world diffusion: vae %.1f s, unet %.1f s", vae_seconds, unet_seconds)
    return {
        "config": cfg.to_dict(),
        "vae_losses": vae_losses,
        "unet_losses": stage.losses,
        "vae_seconds": vae_seconds,
        "unet_seconds": unet_seconds,
        "latent_shape": list(lat_mean.shape[1:]),
        "scaling_factor": float(vae.config.scaling_factor),
    }


def build_pipeline(
    vae: AutoencoderKL,
    text_encoder: torch.nn.Module,
    tokenizer: Any,
    unet: UNet2DConditionModel,
    cfg: WorldDiffusionConfig,
) -> StableDiffusionPipeline:
    """A `StableDiffusionPipeline` (no safety checker) with a DDIM sampler."""
    scheduler = DDIMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionPipeline(
        vae=vae.to("cpu"),
        text_encoder=text_encoder.to("cpu"),
        tokenizer=tokenizer,
        unet=unet.to("cpu"),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(pipe: StableDiffusionPipeline, out_dir: str | Path) -> None:
    """`save_pretrained` (safetensors) to a temporary sibling, then rename onto `out_dir`."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
