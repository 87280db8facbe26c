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

from rope_interp.core.pairs import bucket_index, expand_kv_heads, to_pairs
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError

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
        zq, q_pass = to_pairs(rot_q.to(dtype).transpose(1, 2) / spec.attn_scale, spec)
        zk, k_pass = to_pairs(rot_k.to(dtype).transpose(1, 2), spec)  # [batch, head, pos, ·]
        # Pair-major (re, im) stacks, so that one tile of terms is a batched matmul with inner
        # size 2: [batch, head, pair, tq, 2] @ [batch, head, pair, 2, tk].
        self.q_pairs = torch.stack([zq.real, zq.imag], -1).transpose(2, 3).contiguous()
        self.k_pairs = torch.stack([zk.real, zk.imag], -1).permute(0, 1, 3, 4, 2).contiguous()
        # Whole vectors as rows [batch, head, pos, pair·2 + pass] (q divided by attn_scale):
        # the scores are q_rows · k_rows, and attention-weighted sums of the signed terms are
        # linear, Σ_n A[m, n]·c_i[m, n] = q_i[m] · Σ_n A[m, n]·k_i[n].
        self.q_rows = torch.cat([torch.stack([zq.real, zq.imag], -1).flatten(-2), q_pass], -1)
        self.k_rows = torch.cat([torch.stack([zk.real, zk.imag], -1).flatten(-2), k_pass], -1)
        self.n_rot = 2 * spec.n_pairs
        self.n_pos = rot_q.shape[1]
        self.positions = torch.arange(self.n_pos, device=rot_q.device)

    def scores(self, qs: slice, ks: slice, soft_cap: float | None) -> Tensor:
        """Masked (causal: −inf above the diagonal) logits `[batch, head, tq, tk]`."""
        s = torch.matmul(self.q_rows[:, :, qs], self.k_rows[:, :, ks].transpose(-1, -2))
        if soft_cap is not None:
            s = soft_cap * torch.tanh(s / soft_cap)
        delta = self.positions[qs, None] - self.positions[None, ks]
        return s.masked_fill(delta < 0, -math.inf)

    def log_normaliser(self, qs: slice, tile: int, soft_cap: float | None) -> Tensor:
        """log Σ_n exp(s[m, n]) over the causal keys of each query `[batch, head, tq]`, by a
        running maximum over key tiles."""
        # key 0 is in the first tile: every row has a finite maximum
        s = self.scores(qs, slice(0, min(tile, qs.stop)), soft_cap)
        top = s.amax(-1)
        running = torch.exp(s - top[..., None]).sum(-1)
        for k0 in range(tile, qs.stop, tile):
            s = self.scores(qs, slice(k0, min(k0 + tile, qs.stop)), soft_cap)
            tile_top = s.amax(-1)
            new_top = torch.maximum(top, tile_top)
            running = running * torch.exp(top - new_top) + torch.exp(s - new_top[..., None]).sum(-1)
            top = new_top
        return top + running.log()

    def contributions(self, qs: slice, ks: slice) -> tuple[Tensor, Tensor]:
        """Per-pair terms `[batch, head, pair, tq, tk]` and pass-through `[batch, head, tq, tk]`
        (scaled by 1/attn_scale, unmasked)."""
        c = torch.matmul(self.q_pairs[:, :, :, qs], self.k_pairs[..., ks])
        q_pass, k_pass = self.q_rows[:, :, qs, self.n_rot :], self.k_rows[:, :, ks, self.n_rot :]
        return c, torch.matmul(q_pass, k_pass.transpose(-1, -2))


def tiled_sums(
    rot_q: Float[Tensor, "batch pos head d_head"],
    rot_k: Float[Tensor, "batch pos kv_head d_head"],
    spec: RotarySpec,
    edges: Tensor,
    tile_size: int = 32,
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
    n_batch, n_heads = layer.q_rows.shape[:2]
    device = layer.q_rows.device
    edges = edges.to(device)
    out = TileSums.zeros(n_heads, len(edges) - 1, spec.n_pairs, device)
    out.n_queries += n_batch * n
    for q0 in range(0, n, tile):
        qs = slice(q0, min(q0 + tile, n))
        log_z = layer.log_normaliser(qs, tile, soft_cap)
        weighted_keys = torch.zeros(
            n_batch, n_heads, qs.stop - q0, layer.k_rows.shape[-1], dtype=dtype, device=device
        )
        attn_abs = torch.zeros(
            n_batch, n_heads, spec.n_pairs, qs.stop - q0, dtype=dtype, device=device
        )
        for k0 in range(0, qs.stop, tile):
            ks = slice(k0, min(k0 + tile, qs.stop))
            c, passed = layer.contributions(qs, ks)
            weights = torch.exp(layer.scores(qs, ks, soft_cap) - log_z[..., None])
            weighted_keys += torch.matmul(weights, layer.k_rows[:, :, ks])
            first, onehot, count = _bucket_map(layer.positions, qs, ks, edges)
            take = slice(first, first + len(count))
            out.count[take] += n_batch * count
            out.sum[:, take] += _fold(c, onehot).transpose(1, 2)
            out.pass_sum[:, take] += _fold(passed[:, :, None], onehot)[:, 0]
            magnitude = c.abs_()  # in place: the signed terms are folded already
            attn_abs += (weights[:, :, None] * magnitude).sum(-1)
            out.abs_sum[:, take] += _fold(magnitude, onehot).transpose(1, 2)
        products = layer.q_rows[:, :, qs] * weighted_keys  # [batch, head, tq, pair·2 + pass]
        attn = products[..., : layer.n_rot].unflatten(-1, (spec.n_pairs, 2)).sum(-1)
        attn_pass = products[..., layer.n_rot :].sum(-1)
        out.attn += attn.sum((0, 2)).double()
        out.attn_abs += attn_abs.sum((0, 3)).double()
        out.attn_pass += attn_pass.sum((0, 2)).double()
    return out


def _bucket_map(positions, qs, ks, edges) -> tuple[int, Tensor | None, Tensor]:
    """Which distance buckets one tile's entries fall in: (first bucket, one-hot map
    `[tq·tk, local bucket]` of the causal entries or None when the whole tile is causal and in
    one bucket, causal entries per local bucket `[local bucket]` float64)."""
    lo = qs.start - (ks.stop - 1)  # smallest m − n in the tile
    hi = qs.stop - 1 - ks.start  # largest
    first, last = (int(b) for b in bucket_index(torch.tensor([max(lo, 0), hi]), edges.cpu()))
    if lo >= 0 and first == last:
        size = (qs.stop - qs.start) * (ks.stop - ks.start)
        return first, None, torch.tensor([size], dtype=torch.float64, device=positions.device)
    delta = positions[qs, None] - positions[None, ks]
    bucket = bucket_index(delta.clamp(min=0), edges) - first
    onehot = torch.nn.functional.one_hot(bucket.reshape(-1), last - first + 1)
    onehot *= (delta >= 0).reshape(-1, 1)
    return first, onehot, onehot.sum(0).double()


def _fold(terms: Tensor, onehot: Tensor | None) -> Tensor:
    """`[batch, head, pair, tq, tk]` terms summed over batch and over each bucket's entries:
    `[head, pair, local bucket]` float64."""
    if onehot is None:
        return terms.sum((0, 3, 4)).double()[..., None]
    n_heads, n_pairs = terms.shape[1], terms.shape[2]
    return (terms.sum(0).reshape(n_heads, n_pairs, -1) @ onehot.to(terms.dtype)).double()


def tiled_pattern(
    rot_q: Float[Tensor, "batch pos head d_head"],
    rot_k: Float[Tensor, "batch pos kv_head d_head"],
    spec: RotarySpec,
    tile_size: int = 32,
    soft_cap: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, "batch head qpos kpos"]:
    """The causal attention pattern assembled from the same tiles `tiled_sums` weights by
    (`[batch, head, pos, pos]`: for checking against the host's `hook_pattern` on short
    sequences; at long lengths use `tiled_sums`)."""
    tile = check_tile_size(tile_size)
    layer = _Layer(rot_q, rot_k, spec, dtype)
    n = layer.n_pos
    n_batch, n_heads = layer.q_rows.shape[:2]
    pattern = torch.zeros(n_batch, n_heads, n, n, dtype=dtype, device=layer.q_rows.device)
    for q0 in range(0, n, tile):
        qs = slice(q0, min(q0 + tile, n))
        log_z = layer.log_normaliser(qs, tile, soft_cap)
        for k0 in range(0, qs.stop, tile):
            ks = slice(k0, min(k0 + tile, qs.stop))
            pattern[:, :, qs, ks] = torch.exp(layer.scores(qs, ks, soft_cap) - log_z[..., None])
    return pattern
