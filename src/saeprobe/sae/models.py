"""SAE architectures behind one encode/decode interface.

Every SAE maps raw model activations x: (batch, d_in) to codes: (batch, width) and back:

    pre   = (x * input_scale - b_dec) @ W_enc + b_enc          (batch, width)
    codes = activation(pre)                                     (batch, width)
    x_hat = (codes @ W_dec + b_dec) / input_scale               (batch, d_in)

`input_scale` makes the training inputs have unit mean squared norm; after training it is
folded into the weights (`fold_input_scale`), so a saved SAE has input_scale == 1 and takes and
returns raw activations, with codes in the model's units (decoder rows have unit norm).

Architectures (activation at inference / training objective):
* relu:       relu(pre); mse + l1 * sum_i f_i ||W_dec[i]||.
* topk:       the k largest of relu(pre) per row; mse + AuxK.
* batchtopk:  training keeps the k*batch largest over the batch; inference keeps pre > theta,
              theta a moving average of the smallest kept activation per training batch.
* jumprelu:   pre * (pre > theta_i), per-latent theta = exp(log_threshold); mse + l0 * L0 with
              straight-through pseudo-derivatives for theta (rectangle kernel, bandwidth eps).
* matryoshka: topk or batchtopk selection; loss averaged over the reconstructions made by the
              nested prefixes W_dec[:m] for m in the prefix sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saeprobe.sae import sparse
from saeprobe.sae.config import SAEConfig


@dataclass
class SAEOutput:
    """Result of `SAE.forward`: x_hat (batch, d_in) raw units, codes (batch, width), and
    scalar loss terms (mse = mean over rows of ||x - x_hat||^2 in raw units, l0, and the
    architecture's sparsity term)."""

    x_hat: Tensor
    codes: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class StepContext:
    """Per-step training inputs that are not data.

    sparsity_scale: multiplier of the sparsity coefficient (L1 warmup); dead: (width,) bool
    mask of dead latents or None; chunk: rows per fused encoder block (0 = whole batch);
    matmul_dtype: dtype of the encoder matmul used for selection, None = float32.
    """

    sparsity_scale: float = 1.0
    dead: Tensor | None = None
    chunk: int = 0
    matmul_dtype: torch.dtype | None = None


@dataclass
class TrainStep:
    """Training losses on one batch (scaled units): loss (scalar with grad), terms (detached
    scalars), fired (width,) bool latents active in the batch, l0 scalar."""

    loss: Tensor
    terms: dict[str, Tensor]
    fired: Tensor
    l0: Tensor


class SAE(nn.Module):
    """Base class: parameters, scaling, encode/decode; subclasses set the activation and loss.

    Parameters: W_enc (d_in, width), b_enc (width,), W_dec (width, d_in), b_dec (d_in,);
    buffer input_scale (scalar).
    """

    def __init__(self, cfg: SAEConfig, d_in: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_in = d_in
        self.width = cfg.width
        self.W_enc = nn.Parameter(torch.zeros(d_in, cfg.width))
        self.b_enc = nn.Parameter(torch.zeros(cfg.width))
        self.W_dec = nn.Parameter(torch.zeros(cfg.width, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.tensor(1.0))

    # -- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, seed: int, b_dec: Tensor | None = None, input_scale: float = 1.0) -> None:
        """Random unit-norm decoder rows, tied encoder (W_enc = W_dec^T), zero b_enc.

        seed: RNG seed (a CPU generator, so CPU and GPU start from the same weights);
        b_dec: (d_in,) initial decoder bias in scaled units; input_scale: scalar factor that
        gives the inputs unit mean squared norm.
        """
        gen = torch.Generator().manual_seed(int(seed))
        w = torch.randn(self.width, self.d_in, generator=gen, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.t())
        self.b_enc.zero_()
        self.b_dec.copy_(b_dec if b_dec is not None else torch.zeros(self.d_in))
        self.input_scale.fill_(float(input_scale))

    # -- the shared interface ---------------------------------------------------------------
    def pre_acts(self, x_s: Tensor) -> Tensor:
        """x_s: (batch, d_in) scaled inputs -> (batch, width) pre-activations."""
        return torch.addmm(self.b_enc, x_s - self.b_dec, self.W_enc)

    def activation(self, pre: Tensor) -> Tensor:
        """Inference nonlinearity: pre (batch, width) -> codes (batch, width)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """x: (batch, d_in) raw activations -> codes (batch, width)."""
        return self.activation(self.pre_acts(x.to(self.W_enc.dtype) * self.input_scale))

    def decode(self, codes: Tensor) -> Tensor:
        """codes: (batch, width) -> x_hat (batch, d_in) raw activations."""
        return torch.addmm(self.b_dec, codes, self.W_dec) / self.input_scale

    def forward(self, x: Tensor) -> SAEOutput:
        """x: (batch, d_in) raw -> SAEOutput(x_hat (batch, d_in), codes (batch, width), losses)."""
        codes = self.encode(x)
        x_hat = self.decode(codes)
        mse = (x_hat - x.to(x_hat.dtype)).pow(2).sum(-1).mean()
        losses = {"mse": mse, "l0": (codes > 0).float().sum(-1).mean()}
        losses.update(self._sparsity_terms(codes))
        return SAEOutput(x_hat=x_hat, codes=codes, losses=losses)

    def _sparsity_terms(self, codes: Tensor) -> dict[str, Tensor]:
        return {}

    def training_losses(self, x_s: Tensor, ctx: StepContext) -> TrainStep:
        """Losses on one batch of scaled inputs x_s: (batch, d_in)."""
        raise NotImplementedError

    # -- decoder constraint and scaling ---------------------------------------------------
    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from W_dec.grad the component along each (unit-norm) decoder row."""
        if self.cfg.normalize_decoder and self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g.sub_((g * w).sum(dim=1, keepdim=True) * w)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm."""
        if self.cfg.normalize_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def fold_input_scale(self) -> float:
        """Fold input_scale s into the weights so the SAE works on raw inputs with s = 1.

        Codes become pre/s: b_enc, b_dec (and thresholds) are divided by s; W_enc, W_dec stay.
        Returns the folded s.
        """
        s = float(self.input_scale)
        self.b_enc.div_(s)
        self.b_dec.div_(s)
        self._fold_thresholds(s)
        self.input_scale.fill_(1.0)
        return s

    def _fold_thresholds(self, s: float) -> None:
        pass

    def inference_threshold(self) -> Tensor | None:
        """(width,) threshold of a JumpReLU-style inference activation, or None."""
        return None

    # -- helpers for the k architectures ---------------------------------------------------
    def _recon_loss(self, x_s: Tensor, x_hat: Tensor) -> Tensor:
        return (x_hat - x_s).pow(2).sum(-1).mean()


class ReLUSAE(SAE):
    """ReLU SAE with an L1 penalty weighted by decoder row norms (dense training path)."""

    def activation(self, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def _sparsity_terms(self, codes: Tensor) -> dict[str, Tensor]:
        return {"l1": (codes * self.W_dec.norm(dim=1)).sum(-1).mean()}

    def training_losses(self, x_s: Tensor, ctx: StepContext) -> TrainStep:
        codes = F.relu(self.pre_acts(x_s))
        x_hat = torch.addmm(self.b_dec, codes, self.W_dec)
        mse = self._recon_loss(x_s, x_hat)
        l1 = (codes * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + self.cfg.l1 * ctx.sparsity_scale * l1
        active = codes.detach() > 0
        return TrainStep(
            loss=loss,
            terms={"mse": mse.detach(), "l1": l1.detach()},
            fired=active.any(0),
            l0=active.sum(-1).float().mean(),
        )


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLUFn(torch.autograd.Function):
    """pre * (pre > theta); d/dtheta by the rectangle-kernel pseudo-derivative -(theta/eps)K."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = grad * (pre > theta)
        g_theta = (-(theta / eps) * _rectangle((pre - theta) / eps) * grad).sum(0)
        return g_pre, g_theta, None


class _StepFn(torch.autograd.Function):
    """Heaviside(pre - theta); gradient only to theta: -(1/eps) K((pre - theta)/eps)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_theta = (-(1.0 / eps) * _rectangle((pre - theta) / eps) * grad).sum(0)
        return None, g_theta, None


class JumpReLUSAE(SAE):
    """JumpReLU SAE (Rajamanoharan et al. 2024): per-latent thresholds trained through
    straight-through estimators and an L0 penalty. Extra parameter log_threshold (width,)."""

    def __init__(self, cfg: SAEConfig, d_in: int) -> None:
        super().__init__(cfg, d_in)
        self.log_threshold = nn.Parameter(torch.zeros(cfg.width))

    @torch.no_grad()
    def initialize(self, seed: int, b_dec: Tensor | None = None, input_scale: float = 1.0) -> None:
        super().initialize(seed, b_dec, input_scale)
        self.log_threshold.fill_(math.log(self.cfg.jumprelu_init_threshold))

    def activation(self, pre: Tensor) -> Tensor:
        return pre * (pre > self.log_threshold.exp())

    def inference_threshold(self) -> Tensor:
        return self.log_threshold.detach().exp()

    def _fold_thresholds(self, s: float) -> None:
        self.log_threshold.sub_(math.log(s))

    def training_losses(self, x_s: Tensor, ctx: StepContext) -> TrainStep:
        pre = self.pre_acts(x_s)
        theta = self.log_threshold.exp()
        eps = self.cfg.jumprelu_bandwidth
        codes = _JumpReLUFn.apply(pre, theta, eps)
        x_hat = torch.addmm(self.b_dec, codes, self.W_dec)
        mse = self._recon_loss(x_s, x_hat)
        l0 = _StepFn.apply(pre, theta, eps).sum(-1).mean()
        loss = mse + self.cfg.l0 * ctx.sparsity_scale * l0
        active = codes.detach() > 0
        return TrainStep(
            loss=loss,
            terms={"mse": mse.detach(), "l0_loss": l0.detach()},
            fired=active.any(0),
            l0=active.sum(-1).float().mean(),
        )


class TopKSAE(SAE):
    """TopK SAE (Gao et al. 2024) with AuxK; sparse training path (see `sparse`)."""

    def activation(self, pre: Tensor) -> Tensor:
        assert self.cfg.k is not None
        values, latents = torch.topk(pre, self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, latents, F.relu(values))

    # training: selection -> differentiable sparse codes
    def _select(self, x_s: Tensor, ctx: StepContext) -> sparse.SparseCodes:
        assert self.cfg.k is not None
        x_c = x_s - self.b_dec.detach()
        values, latents = sparse.select_topk(
            x_c, self.W_enc.detach(), self.b_enc.detach(), self.cfg.k, ctx.chunk, ctx.matmul_dtype
        )
        codes = sparse.uniform_codes(values, latents)
        return self._differentiable(codes, x_s)

    def _differentiable(self, codes: sparse.SparseCodes, x_s: Tensor) -> sparse.SparseCodes:
        order, latent_offsets = codes.by_latent(self.width)
        pre = sparse.SelectedPreacts.apply(
            codes.values,
            x_s,
            self.b_dec,
            self.W_enc,
            self.b_enc,
            codes.rows,
            codes.latents,
            codes.offsets,
            order,
            latent_offsets,
        )
        return codes.with_values(F.relu(pre))

    def _reconstruction_terms(
        self, x_s: Tensor, codes: sparse.SparseCodes
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(loss, x_hat of the full dictionary, terms)."""
        x_hat = sparse.decode(codes, self.W_dec) + self.b_dec
        mse = self._recon_loss(x_s, x_hat)
        return mse, x_hat, {"mse": mse.detach()}

    def training_losses(self, x_s: Tensor, ctx: StepContext) -> TrainStep:
        codes = self._select(x_s, ctx)
        loss, x_hat, terms = self._reconstruction_terms(x_s, codes)
        aux = self._auxk_loss(x_s, x_hat, ctx)
        if aux is not None:
            loss = loss + self.cfg.auxk_coef * aux
            terms["auxk"] = aux.detach()
        self._after_selection(codes)
        return TrainStep(loss=loss, terms=terms, fired=codes.fired(self.width), l0=codes.l0())

    def _after_selection(self, codes: sparse.SparseCodes) -> None:
        pass

    def _auxk_loss(self, x_s: Tensor, x_hat: Tensor, ctx: StepContext) -> Tensor | None:
        """AuxK (Gao et al.): the top k_aux dead latents reconstruct the residual x - x_hat.

        Normalised by the residual's total variance and scaled by min(1, n_dead / k_aux).
        Computed densely on the dead columns only: k_aux (default d_in / 2) is large, and a
        (batch, n_dead) matmul beats gathering k_aux decoder rows per input.
        """
        if ctx.dead is None or self.cfg.auxk_coef == 0:
            return None
        dead = torch.nonzero(ctx.dead).squeeze(1)
        n_dead = int(dead.numel())
        if n_dead == 0:
            return None
        k_aux = self.cfg.auxk_k if self.cfg.auxk_k is not None else max(1, self.d_in // 2)
        scale = min(1.0, n_dead / k_aux)
        k_aux = min(k_aux, n_dead)
        pre = torch.addmm(
            self.b_enc.index_select(0, dead), x_s - self.b_dec, self.W_enc.index_select(1, dead)
        )
        values, local = torch.topk(pre, k_aux, dim=1, sorted=False)
        codes = torch.zeros_like(pre).scatter(1, local, F.relu(values))
        e_hat = codes @ self.W_dec.index_select(0, dead)
        residual = (x_s - x_hat).detach()
        total = (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
        return scale * (e_hat - residual).pow(2).sum() / total


class BatchTopKSAE(TopKSAE):
    """BatchTopK SAE (Bussmann et al. 2024). Buffer threshold: scalar inference threshold."""

    def __init__(self, cfg: SAEConfig, d_in: int) -> None:
        super().__init__(cfg, d_in)
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("threshold_initialized", torch.tensor(False))

    def activation(self, pre: Tensor) -> Tensor:
        return F.relu(pre) * (pre > self.threshold)

    def inference_threshold(self) -> Tensor:
        return self.threshold.detach().expand(self.width).clone()

    def _fold_thresholds(self, s: float) -> None:
        self.threshold.div_(s)

    def _select(self, x_s: Tensor, ctx: StepContext) -> sparse.SparseCodes:
        assert self.cfg.k is not None
        batch = x_s.shape[0]
        with torch.no_grad():
            x_c = x_s - self.b_dec
            w, b = self.W_enc, self.b_enc
            if ctx.matmul_dtype is not None:
                x_c, w, b = x_c.to(ctx.matmul_dtype), w.to(ctx.matmul_dtype), b.to(ctx.matmul_dtype)
            pre = torch.addmm(b, x_c, w)
            values, rows, latents = sparse.select_batchtopk(pre, self.cfg.k * batch)
            del pre
        offsets = sparse.offsets_from_rows(rows, batch)
        codes = sparse.SparseCodes(values.float(), latents, rows, offsets, batch, None)
        return self._differentiable(codes, x_s)

    @torch.no_grad()
    def _after_selection(self, codes: sparse.SparseCodes) -> None:
        values = codes.values.detach()
        positive = values[values > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(self.threshold.dtype)
        if not bool(self.threshold_initialized):
            self.threshold.copy_(smallest)
            self.threshold_initialized.fill_(True)
        else:
            lr = self.cfg.batchtopk_threshold_lr
            self.threshold.mul_(1 - lr).add_(lr * smallest)


class _MatryoshkaMixin:
    """Loss = mean over prefixes m of ||x - (b_dec + sum_{latent < m} f_i W_dec[i])||^2."""

    cfg: SAEConfig
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def _reconstruction_terms(
        self, x_s: Tensor, codes: sparse.SparseCodes
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        prefixes = self.cfg.prefixes()
        losses = []
        x_hat = x_s
        for m in prefixes:
            if m >= self.cfg.width:
                part = codes
            else:
                part = codes.with_values(codes.values * (codes.latents < m))
            x_hat = sparse.decode(part, self.W_dec) + self.b_dec
            losses.append((x_hat - x_s).pow(2).sum(-1).mean())
        loss = torch.stack(losses).mean()
        terms = {"mse": losses[-1].detach(), "mse_prefix_mean": loss.detach()}
        return loss, x_hat, terms


class MatryoshkaTopKSAE(_MatryoshkaMixin, TopKSAE):
    """Matryoshka SAE with per-row TopK selection."""


class MatryoshkaBatchTopKSAE(_MatryoshkaMixin, BatchTopKSAE):
    """Matryoshka SAE with BatchTopK selection (Bussmann et al. 2025)."""


def build_sae(cfg: SAEConfig, d_in: int) -> SAE:
    """An uninitialised SAE of the configured architecture for inputs of size d_in."""
    if cfg.arch == "relu":
        return ReLUSAE(cfg, d_in)
    if cfg.arch == "topk":
        return TopKSAE(cfg, d_in)
    if cfg.arch == "batchtopk":
        return BatchTopKSAE(cfg, d_in)
    if cfg.arch == "jumprelu":
        return JumpReLUSAE(cfg, d_in)
    if cfg.matryoshka_base == "topk":
        return MatryoshkaTopKSAE(cfg, d_in)
    return MatryoshkaBatchTopKSAE(cfg, d_in)
