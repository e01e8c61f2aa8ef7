"""Sparse kernels for SAEs whose codes have few active latents (TopK, BatchTopK, Matryoshka).

A batch of codes is kept as `SparseCodes`: the active entries in row-major order (values,
latent ids, row ids) plus per-row `offsets`, instead of a dense (batch, width) matrix.

* Decoding gathers only the active decoder rows (`F.embedding_bag` with per-entry weights):
  O(nnz * d) instead of O(batch * width * d), forward and backward.
* The encoder still needs every pre-activation to choose the active set, but only the selected
  pre-activations receive gradient. `SelectedPreacts` recomputes nothing in its forward and,
  in its backward, forms grad W_enc = x_c^T @ S (S sparse, (batch, width)) as an embedding-bag
  over the inputs grouped by latent: O(nnz * d) instead of a dense (d, batch) @ (batch, width).
* On CPU the encoder matmul and the top-k run block by block (`chunk` rows), so each block of
  pre-activations is selected while it is still in cache.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class SparseCodes:
    """Active entries of a batch of codes, row-major.

    values: (nnz,) activations (differentiable); latents: (nnz,) int64 latent ids;
    rows: (nnz,) int64 row ids (non-decreasing); offsets: (batch,) int64 start of each row;
    batch: number of rows; k: entries per row when every row has exactly k, else None.
    """

    values: Tensor
    latents: Tensor
    rows: Tensor
    offsets: Tensor
    batch: int
    k: int | None = None
    _by_latent: tuple[Tensor, Tensor] | None = None

    def with_values(self, values: Tensor) -> SparseCodes:
        out = SparseCodes(values, self.latents, self.rows, self.offsets, self.batch, self.k)
        out._by_latent = self._by_latent
        return out

    def by_latent(self, width: int) -> tuple[Tensor, Tensor]:
        """(order (nnz,), latent_offsets (width,)): entries sorted by latent id (stable), and
        where each latent's run starts; computed once and shared by the backward passes."""
        if self._by_latent is None:
            with torch.no_grad():
                order = stable_argsort(self.latents)
                counts = torch.bincount(self.latents, minlength=width)
                self._by_latent = (order, torch.cumsum(counts, 0) - counts)
        return self._by_latent

    def fired(self, width: int) -> Tensor:
        """(width,) bool: latents with a positive value somewhere in the batch."""
        mask = torch.zeros(width, dtype=torch.bool, device=self.latents.device)
        mask[self.latents[self.values.detach() > 0]] = True
        return mask

    def l0(self) -> Tensor:
        """Mean number of positive entries per row (scalar tensor)."""
        return (self.values.detach() > 0).sum() / max(self.batch, 1)


def stable_argsort(keys: Tensor) -> Tensor:
    """Stable argsort of a 1-D integer tensor. On CPU through numpy: torch's multi-threaded CPU
    sort was measured 30-50x slower than numpy's radix sort with 2 threads."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.argsort(keys.numpy(), kind="stable"))
    return torch.argsort(keys, stable=True)


def uniform_codes(values: Tensor, latents: Tensor) -> SparseCodes:
    """SparseCodes from per-row top-k results `values, latents`: (batch, k)."""
    batch, k = latents.shape
    device = latents.device
    rows = torch.arange(batch, device=device).repeat_interleave(k)
    offsets = torch.arange(0, batch * k, k, device=device)
    return SparseCodes(values.reshape(-1), latents.reshape(-1), rows, offsets, batch, k)


def decode(codes: SparseCodes, w_dec: Tensor) -> Tensor:
    """sum_j values_j * w_dec[latent_j] per row, without bias.

    codes: nnz entries over `batch` rows; w_dec: (width, d) -> (batch, d).
    """
    order, latent_offsets = codes.by_latent(w_dec.shape[0])
    return SparseDecode.apply(
        codes.values.to(w_dec.dtype),
        w_dec,
        codes.latents,
        codes.rows,
        codes.offsets,
        order,
        latent_offsets,
    )


def sampled_dot(
    a: Tensor, b: Tensor, rows: Tensor, cols: Tensor, offsets: Tensor, csr: bool | None = None
) -> Tensor:
    """out[n] = a[rows[n]] . b[cols[n]] for a: (batch, d), b: (width, d) -> (nnz,).

    csr (default: on CPU): a sampled matmul over a CSR pattern (rows non-decreasing, offsets
    (batch,) their starts); otherwise gathered rows, in blocks of entries.
    """
    if not (csr if csr is not None else a.device.type == "cpu"):
        out = torch.empty(rows.numel(), dtype=a.dtype, device=a.device)
        step = max(1, (1 << 26) // max(1, a.shape[1]))
        for s in range(0, rows.numel(), step):
            r, c = rows[s : s + step], cols[s : s + step]
            out[s : s + step] = (a.index_select(0, r) * b.index_select(0, c)).sum(-1)
        return out
    crow = torch.cat([offsets, offsets.new_tensor([rows.numel()])])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        pattern = torch.sparse_csr_tensor(
            crow,
            cols,
            torch.zeros_like(rows, dtype=a.dtype),
            size=(a.shape[0], b.shape[0]),
            check_invariants=False,
        )
    return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()


class SparseDecode(torch.autograd.Function):
    """out[b] = sum over entries n of row b of values[n] * w_dec[latents[n]].

    Backward: grad values[n] = grad_out[rows[n]] . w_dec[latents[n]] (sampled dot products);
    grad w_dec = per latent, the rows' output gradients weighted by the values (an
    embedding-bag over grad_out grouped by latent), O(nnz * d) each.

    Shapes: values (nnz,), w_dec (width, d), latents / rows (nnz,), offsets (batch,),
    order (nnz,) entries sorted by latent, latent_offsets (width,) -> (batch, d).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        values: Tensor,
        w_dec: Tensor,
        latents: Tensor,
        rows: Tensor,
        offsets: Tensor,
        order: Tensor,
        latent_offsets: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(values, w_dec, latents, rows, offsets, order, latent_offsets)
        return F.embedding_bag(latents, w_dec, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        values, w_dec, latents, rows, offsets, order, latent_offsets = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad = grad.contiguous().to(w_dec.dtype)
        g_values = g_wdec = None
        if needs[0]:
            g_values = sampled_dot(grad, w_dec, rows, latents, offsets)
        if needs[1]:
            g_wdec = F.embedding_bag(
                rows[order], grad, latent_offsets, mode="sum", per_sample_weights=values[order]
            )
        return g_values, g_wdec, None, None, None, None, None


class SelectedPreacts(torch.autograd.Function):
    """Differentiable view of selected pre-activations.

    pre = (x - b_dec) @ w_enc + b_enc, of which only the entries (rows[n], latents[n]) are used;
    their values `pre_values` are computed by the caller without autograd (it needs all of
    `pre` to choose them). Backward sends gradient only through those entries.

    Shapes: pre_values (nnz,), x (batch, d), b_dec (d,), w_enc (d, width), b_enc (width,),
    rows / latents (nnz,) int64 with rows non-decreasing, row_offsets (batch,), order (nnz,)
    entries sorted by latent, latent_offsets (width,) -> (nnz,).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        pre_values: Tensor,
        x: Tensor,
        b_dec: Tensor,
        w_enc: Tensor,
        b_enc: Tensor,
        rows: Tensor,
        latents: Tensor,
        row_offsets: Tensor,
        order: Tensor,
        latent_offsets: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(x, b_dec, w_enc, rows, latents, row_offsets, order, latent_offsets)
        return pre_values.view_as(pre_values)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, b_dec, w_enc, rows, latents, row_offsets, order, latent_offsets = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        width = w_enc.shape[1]
        grad = grad.to(w_enc.dtype)
        g_x = g_bdec = g_wenc = g_benc = None
        if needs[2] or needs[4]:
            g_benc = torch.zeros(width, dtype=grad.dtype, device=grad.device)
            g_benc.index_add_(0, latents, grad)
        if needs[3]:
            # grad W_enc^T (width, d) = per latent, the inputs that selected it weighted by grad.
            x_c = (x - b_dec).to(w_enc.dtype)
            g_wenc = F.embedding_bag(
                rows[order], x_c, latent_offsets, mode="sum", per_sample_weights=grad[order]
            ).t()
        if needs[2]:
            assert g_benc is not None
            g_bdec = -(w_enc @ g_benc)
        if needs[1]:
            g_x = F.embedding_bag(
                latents, w_enc.t().contiguous(), row_offsets, mode="sum", per_sample_weights=grad
            )
        if not needs[4]:
            g_benc = None
        return None, g_x, g_bdec, g_wenc, g_benc, None, None, None, None, None


def select_topk(
    x_c: Tensor,
    w_enc: Tensor,
    b_enc: Tensor,
    k: int,
    chunk: int = 0,
    matmul_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row top-k of pre = x_c @ w_enc + b_enc, without autograd.

    x_c: (batch, d) centred inputs; w_enc: (d, width); b_enc: (width,) ->
    (values (batch, k) float32, latents (batch, k) int64). chunk > 0 processes that many rows
    at a time; matmul_dtype (e.g. bfloat16) sets the matmul precision.
    """
    batch = x_c.shape[0]
    with torch.no_grad():
        if matmul_dtype is not None and matmul_dtype != x_c.dtype:
            x_c, w_enc, b_enc = x_c.to(matmul_dtype), w_enc.to(matmul_dtype), b_enc.to(matmul_dtype)
        if chunk <= 0 or chunk >= batch:
            values, latents = torch.topk(torch.addmm(b_enc, x_c, w_enc), k, dim=1, sorted=False)
            return values.float(), latents
        values = torch.empty(batch, k, dtype=x_c.dtype, device=x_c.device)
        latents = torch.empty(batch, k, dtype=torch.long, device=x_c.device)
        for start in range(0, batch, chunk):
            end = min(start + chunk, batch)
            pre = torch.addmm(b_enc, x_c[start:end], w_enc)
            torch.topk(pre, k, dim=1, sorted=False, out=(values[start:end], latents[start:end]))
        return values.float(), latents


def select_batchtopk(pre: Tensor, n_keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """The n_keep largest entries of relu(pre) over the whole batch, row-major.

    pre: (batch, width) -> (values (nnz,), rows (nnz,), latents (nnz,)), nnz = n_keep, values
    are the raw pre-activations (may be <= 0 when fewer than n_keep are positive).
    """
    batch, width = pre.shape
    n_keep = min(n_keep, pre.numel())
    with torch.no_grad():
        per_row = min(width, max(4 * -(-n_keep // batch), 1))
        cand_vals, cand_idx = torch.topk(pre, per_row, dim=1, sorted=False)
        flat_vals, flat_pos = torch.topk(cand_vals.reshape(-1), n_keep, sorted=False)
        rows = torch.div(flat_pos, per_row, rounding_mode="floor")
        if per_row < width and bool((torch.bincount(rows, minlength=batch) >= per_row).any()):
            # a row filled all its candidate slots, so it may own more: select exactly.
            flat_vals, flat_idx = torch.topk(pre.reshape(-1), n_keep, sorted=False)
        else:
            flat_idx = rows * width + cand_idx.reshape(-1)[flat_pos]
        order = stable_argsort(flat_idx)
        flat_idx, flat_vals = flat_idx[order], flat_vals[order]
        rows = torch.div(flat_idx, width, rounding_mode="floor")
        return flat_vals, rows, flat_idx - rows * width


def offsets_from_rows(rows: Tensor, batch: int) -> Tensor:
    """(batch,) start offsets of each row in a row-major entry list with row ids `rows`."""
    counts = torch.bincount(rows, minlength=batch)
    return torch.cumsum(counts, 0) - counts
