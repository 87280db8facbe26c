"""2-D rotary pairs: real `[..., d_head]` vectors ⇄ complex `[..., n_pairs]` plus pass-through
dims, norms, angles, rotation by position, and the exact per-pair score decomposition.

Pair i of a vector x is z_i = x[a_i] + i·x[b_i] (dims from `RotarySpec.dims`). RoPE multiplies
z_i by the phasor e^{i·p·θ_i} at position p, so for a query at m and a key at n

    q_rot · k_rot = Σ_i Re(z^q_i · conj(z^k_i) · e^{i(m−n)θ_i}) + q_pass · k_pass
                  = Σ_i |z^q_i||z^k_i| cos(α_i + (m−n)θ_i) + q_pass · k_pass.

Pure tensor maths: nothing here knows about models or hooks.
"""

from __future__ import annotations

import torch
from jaxtyping import Complex, Float, Int
from torch import Tensor

from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError


def to_pairs(
    x: Float[Tensor, "*batch d_head"], spec: RotarySpec
) -> tuple[Complex[Tensor, "*batch pair"], Float[Tensor, "*batch n_pass"]]:
    """Split `x` into complex rotary pairs and the pass-through dims (an exact round trip with
    `from_pairs`)."""
    _check_width(x, spec)
    dims = spec.dims.to(x.device)
    real = x[..., dims[:, 0]]
    imag = x[..., dims[:, 1]]
    if not real.is_floating_point() or real.dtype in (torch.float16, torch.bfloat16):
        real, imag = real.float(), imag.float()
    return torch.complex(real, imag), x[..., spec.rotary_dim :]


def from_pairs(
    z: Complex[Tensor, "*batch pair"], x_pass: Float[Tensor, "*batch n_pass"], spec: RotarySpec
) -> Float[Tensor, "*batch d_head"]:
    """Inverse of `to_pairs`."""
    dims = spec.dims.to(z.device)
    rot = torch.empty(*z.shape[:-1], spec.rotary_dim, dtype=z.real.dtype, device=z.device)
    rot[..., dims[:, 0]] = z.real
    rot[..., dims[:, 1]] = z.imag
    return torch.cat([rot.to(x_pass.dtype), x_pass], dim=-1)


def pair_norms(x: Float[Tensor, "*batch d_head"], spec: RotarySpec) -> Float[Tensor, "*batch pair"]:
    """|z_i|: the 2-norm of each rotary pair (invariant under rotation)."""
    return to_pairs(x, spec)[0].abs()


def pair_angles(
    x: Float[Tensor, "*batch d_head"], spec: RotarySpec
) -> Float[Tensor, "*batch pair"]:
    """∠z_i in (−π, π]."""
    return to_pairs(x, spec)[0].angle()


def rotate(
    x: Float[Tensor, "batch pos head d_head"],
    spec: RotarySpec,
    layer: int,
    positions: Int[Tensor, "pos"] | None = None,
) -> Float[Tensor, "batch pos head d_head"]:
    """Apply the model's RoPE at `positions` (default 0..pos-1) to pre-rotation vectors."""
    if positions is None:
        positions = torch.arange(x.shape[1], device=x.device)
    z, x_pass = to_pairs(x, spec)
    phasor = spec.phasors(layer, positions.to(x.device), z.dtype)
    return from_pairs(z * phasor[None, :, None, :], x_pass, spec).to(x.dtype)


def expand_kv_heads(
    k: Float[Tensor, "batch pos kv_head ..."], n_heads: int
) -> Float[Tensor, "batch pos head ..."]:
    """Repeat grouped-query keys so that query head h sees KV head h // (n_heads / n_kv)."""
    n_kv = k.shape[2]
    if n_kv == n_heads:
        return k
    if n_heads % n_kv:
        raise RopeInterpError(f"{n_heads} query heads cannot share {n_kv} KV heads evenly.")
    return torch.repeat_interleave(k, n_heads // n_kv, dim=2)


def band_matrix(
    bands: list[list[int]] | list[Tensor], n_pairs: int, device=None, dtype=torch.float32
) -> Float[Tensor, "pair band"]:
    """One-hot `[pair, band]` matrix for summing per-pair quantities over groups of pairs."""
    matrix = torch.zeros(n_pairs, len(bands), dtype=dtype, device=device)
    for column, members in enumerate(bands):
        members = torch.as_tensor(members, dtype=torch.long)
        if members.numel() and (members.min() < 0 or members.max() >= n_pairs):
            raise RopeInterpError(f"Band {column} names pairs outside 0..{n_pairs - 1}.")
        matrix[members, column] = 1
    return matrix


def score_contributions(
    q: Float[Tensor, "batch qpos head d_head"],
    k: Float[Tensor, "batch kpos kv_head d_head"],
    spec: RotarySpec,
    layer: int,
    query_positions: Int[Tensor, "_qpos"] | None = None,
    key_positions: Int[Tensor, "_kpos"] | None = None,
    bands: list[list[int]] | None = None,
    scaled: bool = True,
    chunk_size: int = 256,
    dtype: torch.dtype = torch.float32,
) -> tuple[Float[Tensor, "batch head qpos kpos band"], Float[Tensor, "batch head qpos kpos"]]:
    """Exact per-pair contributions to every (query, key) attention score.

    Args:
        q, k: *pre-rotation* queries and keys (`hook_q`, `hook_k`); keys may be per KV head.
        query_positions, key_positions: the positions of the given rows (default 0..n-1); use
            them to decompose a slice of a long context.
        bands: optional groups of pair indices; the output's last axis is then one entry per
            band (sums over its pairs) instead of one per pair, which keeps memory small.
        scaled: divide by the model's `attn_scale`, so that pairs + pass-through sum to
            TransformerLens's `hook_attn_scores` (before masking).
        chunk_size: query rows computed at a time.
        dtype: float32 or float64 for the arithmetic.

    Returns:
        `(contributions, pass_through)`: `[batch, head, qpos, kpos, pair or band]` and the
        pass-through term `[batch, head, qpos, kpos]` (zero when all dims rotate).
    """
    _check_width(q, spec)
    _check_width(k, spec)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    device = q.device
    if query_positions is None:
        query_positions = torch.arange(q.shape[1], device=device)
    if key_positions is None:
        key_positions = torch.arange(k.shape[1], device=device)
    _check_positions(query_positions, q.shape[1], "query")
    _check_positions(key_positions, k.shape[1], "key")
    k = expand_kv_heads(k, q.shape[2])

    zq, q_pass = to_pairs(q.to(dtype), spec)
    zk, k_pass = to_pairs(k.to(dtype), spec)
    zq = zq.to(complex_dtype) * spec.phasors(layer, query_positions, complex_dtype)[None, :, None]
    zk = zk.to(complex_dtype) * spec.phasors(layer, key_positions, complex_dtype)[None, :, None]
    scale = spec.attn_scale if scaled else 1.0
    matrix = None if bands is None else band_matrix(bands, spec.n_pairs, device, dtype)

    parts, pass_parts = [], []
    for start in range(0, q.shape[1], chunk_size):
        qr = zq[:, start : start + chunk_size]
        # Re(a·conj(b)) = a.re·b.re + a.im·b.im: the dot product of the two 2-D pairs.
        if matrix is None:
            part = torch.einsum("bqhp,bkhp->bhqkp", qr.real, zk.real)
            part += torch.einsum("bqhp,bkhp->bhqkp", qr.imag, zk.imag)
        else:
            part = torch.einsum("bqhp,bkhp,pc->bhqkc", qr.real, zk.real, matrix)
            part += torch.einsum("bqhp,bkhp,pc->bhqkc", qr.imag, zk.imag, matrix)
        parts.append(part / scale)
        pass_parts.append(
            torch.einsum("bqhd,bkhd->bhqk", q_pass[:, start : start + chunk_size], k_pass) / scale
        )
    return torch.cat(parts, dim=2), torch.cat(pass_parts, dim=2)


def distance_buckets(max_distance: int, per_octave: int = 1) -> Int[Tensor, "edge"]:
    """Edges `e_0 = 0 < e_1 = 1 < e_2 < …` of log-spaced relative-distance buckets: bucket b
    holds the distances Δ = m − n with e_b ≤ Δ < e_{b+1}. Bucket 0 is Δ = 0 alone; then edges
    at round(2^(j/per_octave)) (per_octave=1: [1, 2), [2, 4), [4, 8), …), up to the first edge
    above `max_distance`."""
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 0:
        raise RopeInterpError(f"max_distance must be an integer ≥ 0, got {max_distance!r}.")
    if isinstance(per_octave, bool) or not isinstance(per_octave, int) or per_octave < 1:
        raise RopeInterpError(f"per_octave must be an integer ≥ 1, got {per_octave!r}.")
    edges, j = [0, 1], 1
    while edges[-1] <= max_distance:
        edge = round(2 ** (j / per_octave))
        if edge > edges[-1]:
            edges.append(edge)
        j += 1
    return torch.tensor(edges, dtype=torch.long)


def bucket_index(distance: Int[Tensor, "*n"], edges: Int[Tensor, "edge"]) -> Int[Tensor, "*n"]:
    """The bucket of each distance Δ ≥ 0 under `distance_buckets` edges (e_b ≤ Δ < e_{b+1})."""
    return torch.searchsorted(edges.to(distance.device), distance, right=True) - 1


def _check_width(x: Tensor, spec: RotarySpec) -> None:
    if x.shape[-1] != spec.d_head:
        raise RopeInterpError(
            f"Expected vectors of d_head={spec.d_head} on the last axis, "
            f"got shape {tuple(x.shape)}."
        )


def _check_positions(positions: Tensor, length: int, what: str) -> None:
    if positions.ndim != 1 or positions.shape[0] != length:
        raise RopeInterpError(
            f"{what}_positions must be a 1-D tensor with one entry per {what} row ({length}), "
            f"got shape {tuple(positions.shape)}."
        )
