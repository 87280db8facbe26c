"""Per-pair score statistics of one layer over query × key tiles, for contexts too long to hold
the `[query, key, pair]` decomposition (pure tensor maths: nothing here knows about models).

From the *rotated* queries and keys of one layer (what `hook_rot_q`/`hook_rot_k` carry), with
c_i[m, n] = Re(z^q_i[m] · conj(z^k_i[n])) / attn_scale the contribution of pair i to the
score of query m and key n (the terms of `pairs.score_contributions`) and A the causal softmax
of the scores (after the soft-cap, where the model has one):

- per relative-distance bucket b (`pairs.distance_buckets`, causal n ≤ m): Σ c_i and Σ |c_i|
  over the (batch, m, n) with m − n in b, and their count;
- attention-weighted: Σ_m Σ_n A[m, n]·c_i[m, n] and Σ_m Σ_n A[m, n]·|c_i[m, n]|, and the same
  for the pass-through term;

so that means are sums / counts. A is built per query tile in two passes over the key tiles
(the row maxima and log-sum-exp first, then the normalised tiles), never as a whole row block.
Memory is about 4 · batch · head · tile² · pair numbers of `dtype` plus the layer's q and k,
whatever the sequence length; the sums are float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from jaxtyping import Float
from torch import Tensor

from rope_interp.errors import RopeInterpError
from rope_interp.pairs import bucket_index, expand_kv_heads, to_pairs
from rope_interp.spec import RotarySpec

__all__ = ["TileSums", "check_tile_size", "tiled_pattern", "tiled_sums"]


@dataclass
class TileSums:
    """float64 sums of one layer (add those of several batches with `+=`).

    Shapes: `count` `[bucket]` (causal (batch, query, key) triples per bucket), `sum` and
    `abs_sum` `[head, bucket, pair]`, `pass_sum` `[head, bucket]`; `attn`, `attn_abs`
    `[head, pair]` and `attn_pass` `[head]` (attention-weighted, summed over batch and query);
    `n_queries` `[]` (batch × query rows).
    """

    count: Tensor
    sum: Tensor
    abs_sum: Tensor
    pass_sum: Tensor
    attn: Tensor
    attn_abs: Tensor
    attn_pass: Tensor
    n_queries: Tensor

    @classmethod
    def zeros(cls, n_heads: int, n_buckets: int, n_pairs: int, device=None) -> TileSums:
        def z(*shape):
            return torch.zeros(shape, dtype=torch.float64, device=device)

        return cls(
            count=z(n_buckets),
            sum=z(n_heads, n_buckets, n_pairs),
            abs_sum=z(n_heads, n_buckets, n_pairs),
            pass_sum=z(n_heads, n_buckets),
            attn=z(n_heads, n_pairs),
            attn_abs=z(n_heads, n_pairs),
            attn_pass=z(n_heads),
            n_queries=z(),
        )

    def __iadd__(self, other: TileSums) -> TileSums:
        for f in fields(self):
            getattr(self, f.name).add_(getattr(other, f.name).to(getattr(self, f.name).device))
        return self

    def cpu(self) -> TileSums:
        return TileSums(**{f.name: getattr(self, f.name).cpu() for f in fields(self)})


def check_tile_size(tile_size) -> int:
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size <= 0:
        raise RopeInterpError(f"tile_size must be a positive integer, got {tile_size!r}.")
    return tile_size


class _Layer:
    """One layer's rotated q/k laid out `[batch, head, pos, ·]` in the arithmetic dtype."""

    def __init__(self, rot_q: Tensor, rot_k: Tensor, spec: RotarySpec, dtype: torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise RopeInterpError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
        if rot_q.ndim != 4 or rot_k.ndim != 4 or rot_q.shape[:2] != rot_k.shape[:2]:
            raise RopeInterpError(
                "rot_q and rot_k must be [batch, pos, head, d_head] with the same batch and pos; "
                f"got {tuple(rot_q.shape)} and {tuple(rot_k.shape)}."
            )
        rot_k = expand_kv_heads(rot_k, rot_q.shape[2])
        self.scale = spec.attn_scale
        self.q = rot_q.to(dtype).transpose(1, 2).contiguous()
        self.k = rot_k.to(dtype).transpose(1, 2).contiguous()
        zq, q_pass = to_pairs(self.q, spec)
        zk, k_pass = to_pairs(self.k, spec)
        self.q_re, self.q_im = zq.real.contiguous(), zq.imag.contiguous()
        self.k_re, self.k_im = zk.real.contiguous(), zk.imag.contiguous()
        self.q_pass, self.k_pass = q_pass, k_pass
        self.n_pos = rot_q.shape[1]
        self.positions = torch.arange(self.n_pos, device=rot_q.device)

    def scores(self, qs: slice, ks: slice, soft_cap: float | None) -> Tensor:
        """Masked (causal: −inf above the diagonal) logits `[batch, head, tq, tk]`."""
        s = torch.matmul(self.q[:, :, qs], self.k[:, :, ks].transpose(-1, -2)) / self.scale
        if soft_cap is not None:
            s = soft_cap * torch.tanh(s / soft_cap)
        delta = self.positions[qs, None] - self.positions[None, ks]
        return s.masked_fill(delta < 0, -math.inf)

    def log_normaliser(self, qs: slice, tile: int, soft_cap: float | None) -> Tensor:
        """log Σ_n exp(s[m, n]) over the causal keys of each query `[batch, head, tq]`, by a
        running maximum over key tiles."""
        top = running = None
        for k0 in range(0, qs.stop, tile):
            s = self.scores(qs, slice(k0, min(k0 + tile, qs.stop)), soft_cap)
            tile_top = s.amax(-1)
            if top is None:  # key 0 is in the first tile: every row has a finite maximum
                top, running = tile_top, torch.exp(s - tile_top[..., None]).sum(-1)
                continue
            new_top = torch.maximum(top, tile_top)
            running = running * torch.exp(top - new_top) + torch.exp(s - new_top[..., None]).sum(-1)
            top = new_top
        return top + running.log()

    def contributions(self, qs: slice, ks: slice) -> tuple[Tensor, Tensor]:
        """Per-pair terms `[batch, head, tq, tk, pair]` and pass-through `[batch, head, tq, tk]`
        (scaled by 1/attn_scale, unmasked)."""
        c = self.q_re[:, :, qs, None] * self.k_re[:, :, None, ks]
        c += self.q_im[:, :, qs, None] * self.k_im[:, :, None, ks]
        passed = torch.matmul(self.q_pass[:, :, qs], self.k_pass[:, :, ks].transpose(-1, -2))
        return c / self.scale, passed / self.scale


def tiled_sums(
    rot_q: Float[Tensor, "batch pos head d_head"],
    rot_k: Float[Tensor, "batch pos kv_head d_head"],
    spec: RotarySpec,
    edges: Tensor,
    tile_size: int = 128,
    soft_cap: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> TileSums:
    """The bucketed and attention-weighted per-pair sums of one layer (see the module doc).

    Args:
        rot_q, rot_k: rotated queries and keys at positions 0..pos−1 (keys may be per KV head).
        edges: distance bucket edges from `pairs.distance_buckets`; the last edge must exceed
            pos − 1.
        tile_size: queries and keys per tile (any positive size; the last tile may be short).
        soft_cap: the model's attention soft-cap c (logit → c·tanh(logit/c)) or None.
        dtype: float32 or float64 for the tile arithmetic.
    """
    tile = check_tile_size(tile_size)
    layer = _Layer(rot_q, rot_k, spec, dtype)
    n = layer.n_pos
    if int(edges[-1]) <= n - 1:
        raise RopeInterpError(f"The bucket edges end at {int(edges[-1])}, below distance {n - 1}.")
    n_batch, n_heads = layer.q.shape[:2]
    device = layer.q.device
    edges = edges.to(device)
    out = TileSums.zeros(n_heads, len(edges) - 1, spec.n_pairs, device)
    out.n_queries += n_batch * n
    for q0 in range(0, n, tile):
        qs = slice(q0, min(q0 + tile, n))
        log_z = layer.log_normaliser(qs, tile, soft_cap)
        attn = torch.zeros(n_batch, n_heads, qs.stop - q0, spec.n_pairs, dtype=dtype, device=device)
        attn_abs = torch.zeros_like(attn)
        attn_pass = torch.zeros(attn.shape[:-1], dtype=dtype, device=device)
        for k0 in range(0, qs.stop, tile):
            ks = slice(k0, min(k0 + tile, qs.stop))
            c, passed = layer.contributions(qs, ks)
            magnitude = c.abs()
            weights = torch.exp(layer.scores(qs, ks, soft_cap) - log_z[..., None])
            attn += torch.einsum("bhqk,bhqkp->bhqp", weights, c)
            attn_abs += torch.einsum("bhqk,bhqkp->bhqp", weights, magnitude)
            attn_pass += (weights * passed).sum(-1)
            _add_buckets(out, layer.positions, qs, ks, edges, c, magnitude, passed, n_batch)
        out.attn += attn.sum((0, 2)).double()
        out.attn_abs += attn_abs.sum((0, 2)).double()
        out.attn_pass += attn_pass.sum((0, 2)).double()
    return out


def _add_buckets(out, positions, qs, ks, edges, c, magnitude, passed, n_batch) -> None:
    """Fold one tile's terms into the distance buckets (causal entries only)."""
    lo = qs.start - (ks.stop - 1)  # smallest m − n in the tile
    hi = qs.stop - 1 - ks.start  # largest
    first, last = (int(b) for b in bucket_index(torch.tensor([max(lo, 0), hi]), edges.cpu()))
    if lo >= 0 and first == last:  # all causal, one bucket: a plain sum
        out.count[first] += n_batch * c.shape[2] * c.shape[3]
        out.sum[:, first] += c.sum((0, 2, 3)).double()
        out.abs_sum[:, first] += magnitude.sum((0, 2, 3)).double()
        out.pass_sum[:, first] += passed.sum((0, 2, 3)).double()
        return
    delta = positions[qs, None] - positions[None, ks]
    bucket = bucket_index(delta.clamp(min=0), edges) - first
    onehot = torch.nn.functional.one_hot(bucket.reshape(-1), last - first + 1).to(c.dtype)
    onehot *= (delta >= 0).reshape(-1, 1).to(c.dtype)  # [tq·tk, local bucket]
    n_heads, n_pairs = c.shape[1], c.shape[-1]
    per_pair = onehot.T @ c.sum(0).reshape(n_heads, -1, n_pairs)  # [head, local bucket, pair]
    per_abs = onehot.T @ magnitude.sum(0).reshape(n_heads, -1, n_pairs)
    per_pass = passed.sum(0).reshape(n_heads, -1) @ onehot
    take = slice(first, last + 1)
    out.count[take] += n_batch * onehot.sum(0).double()
    out.sum[:, take] += per_pair.double()
    out.abs_sum[:, take] += per_abs.double()
    out.pass_sum[:, take] += per_pass.double()


def tiled_pattern(
    rot_q: Float[Tensor, "batch pos head d_head"],
    rot_k: Float[Tensor, "batch pos kv_head d_head"],
    spec: RotarySpec,
    tile_size: int = 128,
    soft_cap: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, "batch head qpos kpos"]:
    """The causal attention pattern assembled from the same tiles `tiled_sums` weights by
    (`[batch, head, pos, pos]`: for checking against the host's `hook_pattern` on short
    sequences; at long lengths use `tiled_sums`)."""
    tile = check_tile_size(tile_size)
    layer = _Layer(rot_q, rot_k, spec, dtype)
    n = layer.n_pos
    n_batch, n_heads = layer.q.shape[:2]
    pattern = torch.zeros(n_batch, n_heads, n, n, dtype=dtype, device=layer.q.device)
    for q0 in range(0, n, tile):
        qs = slice(q0, min(q0 + tile, n))
        log_z = layer.log_normaliser(qs, tile, soft_cap)
        for k0 in range(0, qs.stop, tile):
            ks = slice(k0, min(k0 + tile, qs.stop))
            pattern[:, :, qs, ks] = torch.exp(layer.scores(qs, ks, soft_cap) - log_z[..., None])
    return pattern
