"""The backbone interface: residual-stream collection and splicing, for any ViT family."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from saeprobe.data.preprocess import PreprocessParams
from saeprobe.sites import site_name

TOKENS = ("cls", "patches", "all", "mean")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision name; "auto" means bf16 on CUDA, fp32 (none) on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {['auto', *PRECISIONS]}, got {precision!r}")
    return PRECISIONS[precision]


# a stream of its own: an untrained copy never equals a model initialised after
# torch.manual_seed(seed) (the random stand-ins of the tests and the rehearsal are)
UNTRAINED_STREAM = 0x756E74


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build a model at a random initialisation that depends on `seed` alone (an untrained
    control, `models.<name>.untrained`): the CPU generator is seeded from (seed, a stream of
    its own) and restored afterwards, so the caller's random state is untouched."""
    init_seed = int(np.random.SeedSequence([int(seed), UNTRAINED_STREAM]).generate_state(1)[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        yield


class _StopForward(Exception):
    """Raised by a hook after the last block a caller needs: later blocks are not run."""


class Backbone(ABC):
    """A vision transformer whose residual stream can be read and patched.

    Subclasses provide `blocks` (the transformer blocks in order), `_pooled(pixels)` (the
    library's own image embedding) and, where blocks do not run batch-first, `batch_first`.
    """

    model: nn.Module
    spec: dict
    device: torch.device
    autocast_dtype: torch.dtype | None
    preprocess_params: PreprocessParams
    width: int  # d of the residual stream
    embed_dim: int  # size of the pooled embedding
    num_tokens: int  # T: prefix tokens (CLS, registers) + patches
    num_prefix_tokens: int = 1
    batch_first: bool = True

    @property
    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks, in order."""

    @abstractmethod
    def _pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """The library's own image embedding. pixels: (B, 3, H, W) -> (B, embed_dim)."""

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", self.spec.get("source", "model")))

    # -- input -------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Move uint8 images to the device and normalise them there.

        images: (B, 3, H, W) uint8 -> (B, 3, H, W) float32 on `self.device`.
        """
        if getattr(self, "_norm", None) is None:
            p = self.preprocess_params
            self._norm = (
                torch.tensor(p.mean, device=self.device).view(1, 3, 1, 1),
                torch.tensor(p.std, device=self.device).view(1, 3, 1, 1),
            )
        mean, std = self._norm
        x = images.to(self.device, non_blocking=True).float().div_(255)
        return x.sub_(mean).div_(std)

    # -- hooks -------------------------------------------------------------------------
    def _to_btd(self, output: torch.Tensor | tuple) -> torch.Tensor:
        x = output[0] if isinstance(output, tuple) else output
        return x if self.batch_first else x.transpose(0, 1)

    def _from_btd(self, x: torch.Tensor, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        x = x if self.batch_first else x.transpose(0, 1)
        return (x, *output[1:]) if isinstance(output, tuple) else x

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                    yield

    def select_tokens(self, x: torch.Tensor, tokens: str) -> torch.Tensor:
        """Pick tokens from a residual stream x: (B, T, d).

        cls -> (B, d); patches -> (B, T - prefix, d); all -> (B, T, d); mean -> (B, d), the
        mean over patch tokens computed in float32.
        """
        p = self.num_prefix_tokens
        if tokens == "cls":
            return x[:, 0]
        if tokens == "patches":
            return x[:, p:]
        if tokens == "all":
            return x
        if tokens == "mean":
            return x[:, p:].float().mean(dim=1)
        raise ValueError(f"tokens: expected one of {list(TOKENS)}, got {tokens!r}")

    def check_layer(self, layer: int) -> None:
        """Raise a ValueError naming the valid range unless `layer` is a block index."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(
                f"layer {layer} out of range for {self.name}: it has {self.num_layers} blocks "
                f"(0-based layers 0..{self.num_layers - 1})"
            )

    # -- public API --------------------------------------------------------------------
    def collect(
        self,
        pixels: torch.Tensor,
        layers: Sequence[int],
        tokens: Sequence[str],
        pooled: bool,
    ) -> dict[str, torch.Tensor]:
        """Residual stream after each requested block, in one forward pass.

        pixels: (B, 3, H, W) normalised (from `prepare`). Returns {site_name: tensor}:
        `L{i}_cls`, `L{i}_mean`: (B, d); `L{i}_patches`: (B, T - prefix, d); `L{i}_all`:
        (B, T, d); `pooled`: (B, embed_dim). Without `pooled`, the forward stops after the
        last requested block.
        """
        layers = sorted(set(layers))
        for layer in layers:
            self.check_layer(layer)
        for tok in tokens:
            if tok not in TOKENS:
                raise ValueError(f"tokens: expected items of {list(TOKENS)}, got {tok!r}")
        if not pooled and not (layers and tokens):
            raise ValueError("collect: nothing requested (no layers/tokens and pooled=False)")
        out: dict[str, torch.Tensor] = {}
        last = layers[-1] if layers and tokens else None

        def make_hook(layer: int) -> Callable:
            def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
                x = self._to_btd(output)
                for tok in tokens:
                    out[site_name(layer, tok)] = self.select_tokens(x, tok)
                if layer == last and not pooled:
                    raise _StopForward

            return hook

        handles = [self.blocks[i].register_forward_hook(make_hook(i)) for i in layers]
        try:
            with self._context():
                try:
                    embedding = self._pooled(pixels)
                except _StopForward:
                    embedding = None
        finally:
            for handle in handles:
                handle.remove()
        if pooled:
            out["pooled"] = embedding
        return out

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's own image embedding. pixels: (B, 3, H, W) -> (B, embed_dim)."""
        with self._context():
            return self._pooled(pixels)

    def forward_with_patch(
        self,
        pixels: torch.Tensor,
        layer: int,
        patch_fn: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Pooled embedding with the residual stream after block `layer` replaced.

        pixels: (B, 3, H, W) normalised; patch_fn maps the stream (B, T, d) to (B, T, d);
        the remaining blocks and the head run on its output. Returns (B, embed_dim).
        """
        self.check_layer(layer)

        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> object:
            x = self._to_btd(output)
            patched = patch_fn(x)
            if patched.shape != x.shape:
                raise ValueError(
                    f"patch_fn must keep the shape {tuple(x.shape)}, got {tuple(patched.shape)}"
                )
            return self._from_btd(patched.to(x.dtype), output)

        handle = self.blocks[layer].register_forward_hook(hook)
        try:
            with self._context():
                return self._pooled(pixels)
        finally:
            handle.remove()

    def describe(self) -> dict:
        """What goes into the activation store's metadata about this model."""
        return {
            "spec": self.spec,
            "num_layers": self.num_layers,
            "num_prefix_tokens": self.num_prefix_tokens,
            "num_tokens": self.num_tokens,
            "width": self.width,
            "embed_dim": self.embed_dim,
            "preprocess": self.preprocess_params.to_dict(),
            "autocast": str(self.autocast_dtype) if self.autocast_dtype else None,
        }
