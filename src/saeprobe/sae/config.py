"""Configuration dataclasses for SAE architectures and their training.

`SAEConfig` fixes one SAE (architecture, width, sparsity); `TrainConfig` fixes how a sweep of
SAEs is trained from one stream of batches (batch size, schedule, checkpoints). Both are plain
frozen dataclasses that round-trip through JSON (`to_dict` / `from_dict`), so `cfg.json` and the
checkpoint fingerprint are made from them.

`from_dict` is `saeprobe.config.load_section` (unknown keys are errors). The config's SAE
sections (`sae.sweep.*`, `sae.train`, `diffusion.sae.*`, `mllm.sae`, `mllm.sae_train`) are
checked by the schema and `saeprobe.config.check_references` before any job; `validate` keeps the
objects' own invariants for what is built outside the config (the command line, `cfg.json`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from saeprobe.config import ConfigError, FromConfig

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
K_ARCHITECTURES = ("topk", "batchtopk", "matryoshka")
B_DEC_INITS = ("geometric_median", "mean", "zeros")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class SAEConfig(FromConfig):
    """One sparse autoencoder.

    Fields:
        arch: relu | topk | batchtopk | jumprelu | matryoshka.
        width: number of latents (dictionary size).
        k: active latents per input (topk), on average per batch (batchtopk, matryoshka);
            set to None for relu and jumprelu.
        l1: relu only; coefficient of the L1 penalty sum_i f_i * ||W_dec[i]||.
        l0: jumprelu only; coefficient of the L0 penalty (straight-through estimator).
        jumprelu_bandwidth: jumprelu only; kernel width of the threshold pseudo-derivative,
            in units of the scaled input (unit mean squared norm).
        jumprelu_init_threshold: jumprelu only; initial threshold (scaled units). Larger than
            the 1e-3 of Rajamanoharan et al. because the thresholds move in log space at ~lr
            per step, and short runs on small data would otherwise end far from sparse.
        matryoshka_base: matryoshka only; "topk" or "batchtopk" selection.
        matryoshka_prefixes: matryoshka only; increasing nested dictionary sizes, the last equal
            to width. None => (width/16, width/8, width/4, width/2, width).
        batchtopk_threshold_lr: batchtopk/matryoshka-batchtopk; rate of the moving average that
            estimates the inference threshold from the smallest selected activation per batch.
        auxk_coef: weight of the AuxK loss on dead latents (k architectures); 0 disables it.
        auxk_k: number of dead latents used by AuxK; None => d_in // 2.
        b_dec_init: geometric_median | mean | zeros; decoder bias initialisation from a sample.
        normalize_decoder: keep decoder rows at unit norm (gradient projection + renormalise).
        lr: learning rate for this SAE; None => TrainConfig.lr.
        name: free label carried into cfg.json.
    """

    arch: str = "topk"
    width: int = 4096
    k: int | None = 32
    l1: float = 1.0
    l0: float = 1e-3
    jumprelu_bandwidth: float = 0.01
    jumprelu_init_threshold: float = 0.05
    matryoshka_base: str = "batchtopk"
    matryoshka_prefixes: tuple[int, ...] | None = None
    batchtopk_threshold_lr: float = 0.01
    auxk_coef: float = 1.0 / 32.0
    auxk_k: int | None = None
    b_dec_init: str = "geometric_median"
    normalize_decoder: bool = True
    lr: float | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in K_ARCHITECTURES:
            object.__setattr__(self, "k", None)  # k means nothing to relu / jumprelu
        if self.matryoshka_prefixes is not None:
            object.__setattr__(
                self, "matryoshka_prefixes", tuple(int(p) for p in self.matryoshka_prefixes)
            )
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the field when a value is out of range."""
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"arch: expected one of {list(ARCHITECTURES)}, got {self.arch!r}")
        if self.width < 1:
            raise ConfigError(f"width: expected a positive integer, got {self.width}")
        if self.arch in K_ARCHITECTURES:
            if self.k is None or self.k < 1:
                raise ConfigError(f"k: arch {self.arch!r} needs k >= 1, got {self.k}")
            if self.width < self.k:
                raise ConfigError(f"width ({self.width}) must be >= k ({self.k})")
        if self.arch == "relu" and self.l1 < 0:
            raise ConfigError(f"l1: expected >= 0, got {self.l1}")
        if self.arch == "jumprelu":
            if self.l0 < 0:
                raise ConfigError(f"l0: expected >= 0, got {self.l0}")
            if self.jumprelu_bandwidth <= 0 or self.jumprelu_init_threshold <= 0:
                raise ConfigError("jumprelu_bandwidth and jumprelu_init_threshold must be > 0")
        if self.arch == "matryoshka":
            if self.matryoshka_base not in ("topk", "batchtopk"):
                raise ConfigError(
                    f"matryoshka_base: expected 'topk' or 'batchtopk', got {self.matryoshka_base!r}"
                )
            prefixes = self.prefixes()
            if list(prefixes) != sorted(set(prefixes)) or prefixes[0] < 1:
                raise ConfigError(
                    f"matryoshka_prefixes: expected strictly increasing positive sizes, got "
                    f"{list(prefixes)}"
                )
            if prefixes[-1] != self.width:
                raise ConfigError(
                    f"matryoshka_prefixes: the last prefix must equal width ({self.width}), got "
                    f"{list(prefixes)}"
                )
        if not 0 < self.batchtopk_threshold_lr <= 1:
            raise ConfigError(
                f"batchtopk_threshold_lr: expected in (0, 1], got {self.batchtopk_threshold_lr}"
            )
        if self.auxk_coef < 0:
            raise ConfigError(f"auxk_coef: expected >= 0, got {self.auxk_coef}")
        if self.auxk_k is not None and self.auxk_k < 1:
            raise ConfigError(f"auxk_k: expected a positive integer or None, got {self.auxk_k}")
        if self.b_dec_init not in B_DEC_INITS:
            raise ConfigError(
                f"b_dec_init: expected one of {list(B_DEC_INITS)}, got {self.b_dec_init!r}"
            )
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr: expected > 0 or None, got {self.lr}")

    def prefixes(self) -> tuple[int, ...]:
        """Matryoshka nested dictionary sizes (last == width)."""
        if self.matryoshka_prefixes is not None:
            return self.matryoshka_prefixes
        sizes = [max(1, self.width // d) for d in (16, 8, 4, 2)] + [self.width]
        return tuple(sorted(set(sizes)))

    def selection(self) -> str:
        """How latents are chosen in training: relu | topk | batchtopk | jumprelu."""
        return self.matryoshka_base if self.arch == "matryoshka" else self.arch

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["matryoshka_prefixes"] is not None:
            out["matryoshka_prefixes"] = list(out["matryoshka_prefixes"])
        return out

    config_key = "SAEConfig"  # sae.sweep.<name>, diffusion.sae.sweep.<name>, mllm.sae, cfg.json


@dataclass(frozen=True)
class TrainConfig(FromConfig):
    """Training shared by every SAE of a sweep (they see the same batches).

    Fields:
        batch_size: rows per step (incomplete last batch of an epoch is dropped).
        epochs: passes over the training activations.
        lr: Adam learning rate (an SAEConfig.lr overrides it per SAE).
        adam_betas, adam_eps: Adam settings; parameters and optimizer state stay float32.
        warmup_steps: linear learning-rate warmup from 0.
        decay_fraction: linear decay to 0 over this final fraction of the steps.
        l1_warmup_fraction: relu only; the L1 coefficient ramps linearly from 0 over this
            fraction of the steps.
        max_grad_norm: clip the global gradient norm per SAE; None disables clipping.
        dead_after_tokens: a latent that has not fired on this many training inputs counts as
            dead (AuxK target and the progress bar's dead fraction).
        init_sample_size: rows used to estimate the input scale and the decoder-bias init.
        checkpoint_every: steps between checkpoints; 0 disables checkpoints.
        keep_checkpoints: checkpoints kept per SAE (>= 2 keeps a sweep resumable if a kill
            lands between two SAEs' checkpoint writes).
        dtype: matmul dtype, float32 or bfloat16 (autocast; meant for GPUs).
        encode_chunk: rows per fused encoder matmul + top-k block on CPU (cache locality);
            0 means the whole batch at once (used on GPUs).
        log_every: steps between progress-bar refreshes.
    """

    batch_size: int = 4096
    epochs: int = 1
    lr: float = 4e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 100
    decay_fraction: float = 0.2
    l1_warmup_fraction: float = 0.05
    max_grad_norm: float | None = None
    dead_after_tokens: int = 250_000
    init_sample_size: int = 16_384
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    dtype: str = "float32"
    encode_chunk: int = 1024
    log_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the field when a value is out of range."""
        positive = {
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "init_sample_size": self.init_sample_size,
            "keep_checkpoints": self.keep_checkpoints,
            "log_every": self.log_every,
            "dead_after_tokens": self.dead_after_tokens,
        }
        for key, value in positive.items():
            if int(value) < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"lr: expected > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.encode_chunk < 0:
            raise ConfigError("warmup_steps, checkpoint_every and encode_chunk must be >= 0")
        if not 0 <= self.decay_fraction <= 1 or not 0 <= self.l1_warmup_fraction <= 1:
            raise ConfigError("decay_fraction and l1_warmup_fraction must lie in [0, 1]")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: expected one of {list(DTYPES)}, got {self.dtype!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm: expected > 0 or None, got {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["adam_betas"] = list(out["adam_betas"])
        return out

    config_key = "TrainConfig"  # sae.train, diffusion.sae.train, mllm.sae_train
