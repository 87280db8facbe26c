"""Rotary formulas every backend shares (no model, no hooks): which dims form pair i, θ_i from a
config's RoPE formula, and rotation of pairs by per-position cos/sin tables.

`rope_interp.core.spec` re-exports `Layout`, `pair_dims`, `expected_thetas` and `check_thetas`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rope_interp.errors import RopeInterpError

Layout = Literal["half", "interleaved"]
# Relative tolerance for "buffers agree with the config formula": float32 buffers give ~1e-6;
# wide enough for any float32 formula variant, narrow enough to catch a wrong base or scaling.
_THETA_RTOL = 1e-3


def pair_dims(rotary_dim: int, layout: Layout) -> Int[Tensor, "pair 2"]:
    """Pair i's two dims: (i, i + rotary_dim/2) half-split, (2i, 2i+1) interleaved."""
    if rotary_dim % 2:
        raise RopeInterpError(f"rotary_dim must be even, got {rotary_dim}.")
    n = rotary_dim // 2
    i = torch.arange(n, device="cpu")  # index tables live on the CPU; users move them
    if layout == "half":
        return torch.stack([i, i + n], dim=1)
    if layout == "interleaved":
        return torch.stack([2 * i, 2 * i + 1], dim=1)
    raise RopeInterpError(f"layout must be 'half' or 'interleaved', got {layout!r}.")


def expected_thetas(
    cfg, rotary_dim: int, base: float, attn_type: str | None = None
) -> Float[Tensor, "pair"]:
    """θ_i from the config's formula, in float64, written independently of TransformerLens."""
    i = torch.arange(rotary_dim // 2, dtype=torch.float64, device="cpu")
    inv_freq = base ** (-2 * i / rotary_dim)
    if getattr(cfg, "use_NTK_by_parts_rope", False):
        factor = cfg.NTK_by_parts_factor
        low_wl = cfg.NTK_original_ctx_len / cfg.NTK_by_parts_low_freq_factor
        high_wl = cfg.NTK_original_ctx_len / cfg.NTK_by_parts_high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        smooth = (cfg.NTK_original_ctx_len / wavelen - cfg.NTK_by_parts_low_freq_factor) / (
            cfg.NTK_by_parts_high_freq_factor - cfg.NTK_by_parts_low_freq_factor
        )
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        return torch.where(
            wavelen > low_wl, inv_freq / factor, torch.where(wavelen < high_wl, inv_freq, blended)
        )
    use_yarn = getattr(cfg, "use_yarn_rope", False) and not (
        getattr(cfg, "yarn_global_attn_only", False) and attn_type == "local"
    )
    if use_yarn:
        orig = cfg.yarn_original_max_position_embeddings

        def correction_dim(rotations: float) -> float:
            return rotary_dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(cfg.yarn_beta_fast), correction_dim(cfg.yarn_beta_slow)
        if cfg.yarn_truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, rotary_dim - 1)
        if low == high:
            high += 0.001
        ramp = ((i - low) / (high - low)).clamp(0, 1)
        return inv_freq / cfg.yarn_factor * ramp + inv_freq * (1 - ramp)
    scaling = getattr(cfg, "rotary_scaling_factor", 1.0)
    if scaling != 1.0 and attn_type != "local":
        inv_freq = inv_freq / scaling
    return inv_freq


def theta_rtol(buffer_dtype: torch.dtype) -> float:
    """Relative tolerance for θ read back from cos/sin buffers of `buffer_dtype` against a
    float64 formula.

    θ = atan2(sin θ, cos θ) with each of sin, cos rounded to relative error ≤ u (the dtype's
    unit roundoff, eps/2) moves θ by at most 2u·|sin θ·cos θ| ≤ 2u·θ; allow twice that (the
    buffers were computed in float32 first). bfloat16: 1.6e-2, float16: 2.0e-3; float32 and
    float64 keep `_THETA_RTOL`.
    """
    if not buffer_dtype.is_floating_point:
        return _THETA_RTOL
    return max(_THETA_RTOL, 2 * torch.finfo(buffer_dtype).eps)


def check_thetas(
    measured: Float[Tensor, "pair"],
    expected: Float[Tensor, "pair"],
    buffer_dtype: torch.dtype,
    where: str,
    what: str = "its config",
) -> None:
    """Raise if θ read from cos/sin buffers of `buffer_dtype` differs from `expected` (a float64
    formula) by more than `theta_rtol(buffer_dtype)` relative. Compared in float64 on the CPU
    (both are `n_pairs` numbers), whatever device the buffers live on."""
    measured = measured.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    rel_each = (measured - expected).abs() / expected.abs()
    rel = float(rel_each.max())
    rtol = theta_rtol(buffer_dtype)
    if rel > rtol:
        worst = int(rel_each.argmax())
        raise RopeInterpError(
            f"{where}: rotary frequencies in the model's cos/sin buffers disagree with "
            f"{what} (pair {worst}: buffer θ={float(measured[worst]):.6g}, config formula "
            f"θ={float(expected[worst]):.6g}, max relative difference {rel:.2e}, allowed "
            f"{rtol:.1e} for {str(buffer_dtype).removeprefix('torch.')} buffers): {what} does "
            "not describe the rotation this model applies (check its rotary base and scaling)."
        )


def rotate_by_tables(
    x: Float[Tensor, "batch pos head d_head"],
    cos: Float[Tensor, "n_positions pair"],
    sin: Float[Tensor, "n_positions pair"],
    dims: Int[Tensor, "pair 2"],
) -> Float[Tensor, "batch pos head d_head"]:
    """Rotate pair i of `x` at position p (0..pos-1) by `cos[p, i] + i·sin[p, i]`;
    pass-through dims are copied."""
    n = x.shape[1]
    dims = dims.to(x.device)
    c = cos[:n].to(x.device, torch.float32)[None, :, None, :]
    s = sin[:n].to(x.device, torch.float32)[None, :, None, :]
    a, b = x[..., dims[:, 0]].float(), x[..., dims[:, 1]].float()
    out = x.clone()
    out[..., dims[:, 0]] = (a * c - b * s).to(x.dtype)
    out[..., dims[:, 1]] = (a * s + b * c).to(x.dtype)
    return out
