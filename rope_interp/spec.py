"""`RotarySpec`: everything about a model's rotary embedding that the maths needs.

Frequencies are read from each layer's own `rotary_cos`/`rotary_sin` buffers (the ground truth:
the angle of pair i at position p is p·θ_i) and cross-checked against an independent float64
implementation of the config's formula (base, local base, linear scaling, NTK-by-parts, YaRN).

In a bfloat16/float16 model those buffers are rounded to the model's dtype, and that rounded
rotation is the one the model applies: the spec keeps the rounded tables (the decomposition uses
them, so it stays exact against `hook_attn_scores`), and θ read back from them carries the
rounding (relative error up to ~4e-3 in bfloat16); the config check allows for it
(`theta_rtol`).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rope_interp.errors import RopeInterpError

Layout = Literal["half", "interleaved"]
# Relative tolerance for "buffers agree with the config formula": float32 buffers give ~1e-6;
# wide enough for any float32 formula variant, narrow enough to catch a wrong base or scaling.
_THETA_RTOL = 1e-3


@dataclass(frozen=True, eq=False)
class RotarySpec:
    """Rotary geometry of a model.

    Attributes:
        thetas: `[n_layers, n_pairs]` float64 radians per token, on the CPU; pair 0 is the
            highest frequency. Read back from the model's own cos/sin at position 1 (atan2),
            so in a bf16/fp16 model they carry the buffers' rounding (see `theta_rtol`).
        cos, sin: per layer `[n_positions, n_pairs]` tables taken from the model (pair-indexed,
            in the buffers' dtype and on their device); `cos + i·sin` is the phasor applied to
            pair i at position p (YaRN scales its magnitude). These, not `thetas`, are what the
            decomposition rotates by, so it matches the model's rounded rotation.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    rotary_dim: int
    layout: Layout
    attn_scale: float
    n_ctx: int
    thetas: Float[Tensor, "layer pair"]
    cos: list[Tensor] = field(repr=False)
    sin: list[Tensor] = field(repr=False)
    bases: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # θ is small metadata read into tables and figures: kept as float64 on the CPU whatever
        # device the model (and its cos/sin tables) is on.
        object.__setattr__(self, "thetas", self.thetas.detach().to("cpu", torch.float64))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_model(cls, model, check_config: bool = True) -> RotarySpec:
        """Read the spec from a `HookedTransformer` (or a `TransformerBridge`) with rotary
        attention."""
        from rope_interp.bridge import is_bridge, spec_from_bridge

        if is_bridge(model):
            return spec_from_bridge(model, check_config=check_config)
        key = _buffer_key(model, check_config)
        cached = _SPEC_CACHE.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        spec = cls._read(model, check_config)
        _SPEC_CACHE[model] = (key, spec)
        return spec

    @classmethod
    def _read(cls, model, check_config: bool) -> RotarySpec:
        cfg = model.cfg
        if getattr(cfg, "positional_embedding_type", None) != "rotary":
            raise RopeInterpError(
                f"This model has no rotary attention (positional_embedding_type="
                f"{getattr(cfg, 'positional_embedding_type', None)!r}); rope-interp needs a "
                "model with rotary embeddings, e.g. Llama, Pythia, Gemma, Qwen or SmolLM2."
            )
        rotary_dim = int(cfg.rotary_dim)
        layout: Layout = "interleaved" if cfg.rotary_adjacent_pairs else "half"
        dims = pair_dims(rotary_dim, layout)
        cos_tables, sin_tables, thetas, bases = [], [], [], []
        # Layers with identical buffers (the usual case) share one full-context table.
        seen: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            base = float(attn._rotary_base()) if hasattr(attn, "_rotary_base") else cfg.rotary_base
            raw_cos, raw_sin = attn.rotary_cos.detach(), attn.rotary_sin.detach()
            shared = next(
                (
                    entry
                    for entry in seen
                    if torch.equal(entry[0], raw_cos) and torch.equal(entry[1], raw_sin)
                ),
                None,
            )
            if shared is None:
                cos_a, sin_a = _pair_tables(attn, rotary_dim, cfg, dims, layer, layout)
                theta = torch.atan2(sin_a[1].double(), cos_a[1].double())
                shared = (raw_cos, raw_sin, cos_a, sin_a, theta)
                seen.append(shared)
            _, _, cos_a, sin_a, theta = shared
            cos_tables.append(cos_a)
            sin_tables.append(sin_a)
            thetas.append(theta)
            bases.append(base)
            if check_config:
                expected = expected_thetas(cfg, rotary_dim, base, getattr(attn, "attn_type", None))
                check_thetas(theta, expected, raw_cos.dtype, f"Layer {layer}")
        n_kv = cfg.n_key_value_heads or cfg.n_heads
        return cls(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_kv_heads=int(n_kv),
            d_head=cfg.d_head,
            rotary_dim=rotary_dim,
            layout=layout,
            attn_scale=float(model.blocks[0].attn.attn_scale),
            n_ctx=cfg.n_ctx,
            thetas=torch.stack(thetas),
            cos=cos_tables,
            sin=sin_tables,
            bases=tuple(bases),
        )

    # ---- geometry -----------------------------------------------------------------------
    @property
    def n_pairs(self) -> int:
        return self.rotary_dim // 2

    @property
    def n_pass(self) -> int:
        """Pass-through (NoPE) dims after the rotary ones."""
        return self.d_head - self.rotary_dim

    @property
    def dims(self) -> Int[Tensor, "pair 2"]:
        """Pair → (dim a, dim b) in d_head coordinates."""
        return pair_dims(self.rotary_dim, self.layout)

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """The KV head that query head `head` reads."""
        self.check_head(head)
        return head // self.group_size

    def wavelengths(self) -> Float[Tensor, "layer pair"]:
        """λ_i = 2π/θ_i in tokens."""
        return 2 * math.pi / self.thetas

    def cycles(self, context: int) -> Float[Tensor, "layer pair"]:
        """How many turns pair i makes over `context` tokens: L·θ_i / 2π."""
        return context * self.thetas / (2 * math.pi)

    def partial_cycle_mask(self, context: int, turn: float = 2 * math.pi) -> Tensor:
        """`[layer, pair]` True where θ_i·L < `turn` (2π: less than one cycle; π: half)."""
        return context * self.thetas < turn

    def first_partial_pair(self, context: int, layer: int = 0, turn: float = 2 * math.pi) -> int:
        """Index of the first pair with θ_i·L < turn (n_pairs if none)."""
        self.check_layer(layer)
        mask = self.partial_cycle_mask(context, turn)[layer]
        return int(mask.float().argmax()) if mask.any() else self.n_pairs

    def critical_dimension(self, context: int, layer: int = 0) -> int:
        """Number of rotary dims that turn through a full cycle within `context` (Liu et al.)."""
        return 2 * self.first_partial_pair(context, layer)

    def phasors(self, layer: int, positions: Int[Tensor, "*pos"], dtype=torch.complex64) -> Tensor:
        """`[*pos, n_pairs]` complex phasors the model applies at `positions`."""
        self.check_layer(layer)
        table_len = self.cos[layer].shape[0]
        if positions.numel() and (positions.min() < 0 or positions.max() >= table_len):
            raise RopeInterpError(
                f"Positions must lie in [0, {table_len}); got {int(positions.min())}.."
                f"{int(positions.max())}. Sequences may not exceed the model context."
            )
        cos = self.cos[layer].to(positions.device)[positions]
        sin = self.sin[layer].to(positions.device)[positions]
        real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
        return torch.complex(cos.to(real_dtype), sin.to(real_dtype))

    # ---- validation ---------------------------------------------------------------------
    def check_layer(self, layer: int) -> int:
        return _check_index("layer", layer, self.n_layers)

    def check_head(self, head: int) -> int:
        return _check_index("head", head, self.n_heads)

    def check_pair(self, pair: int) -> int:
        return _check_index("pair", pair, self.n_pairs)

    def summary(self) -> str:
        bases = sorted(set(self.bases))
        return (
            f"RoPE: {self.n_layers} layers, {self.n_heads} heads ({self.n_kv_heads} KV), d_head "
            f"{self.d_head}, rotary_dim {self.rotary_dim} ({self.n_pairs} pairs, {self.n_pass} "
            f"pass-through dims), layout {self.layout}, base {', '.join(f'{b:g}' for b in bases)}"
        )


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


def first_partial_pair(rotary_dim: int, base: float, context: int) -> int:
    """Closed form: ⌈(rotary_dim/2)·ln(L/2π)/ln(base)⌉, the first pair with θ_i·L < 2π."""
    return math.ceil((rotary_dim / 2) * math.log(context / (2 * math.pi)) / math.log(base))


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


# Specs already read, per model; reused while its rotary buffers are the same tensors, unmodified.
_SPEC_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _buffer_key(model, check_config: bool) -> tuple:
    buffers = [
        buf
        for block in getattr(model, "blocks", [])
        for buf in (
            getattr(block.attn, "rotary_cos", None),
            getattr(block.attn, "rotary_sin", None),
        )
        if isinstance(buf, Tensor)
    ]
    cfg = model.cfg
    fields = (cfg.rotary_base, cfg.rotary_dim, cfg.rotary_adjacent_pairs, cfg.n_ctx)
    return (check_config, fields, tuple((b.data_ptr(), b._version, b.shape) for b in buffers))


def _pair_tables(attn, rotary_dim: int, cfg, dims: Tensor, layer: int, layout: str):
    """Pair-indexed `[n_ctx, n_pairs]` cos and sin of one layer, checked against the layout."""
    cos_buf, sin_buf = _full_tables(attn, rotary_dim, cfg)
    cos_a, sin_a = cos_buf[:, dims[:, 0]], sin_buf[:, dims[:, 0]]
    if not (
        torch.equal(cos_a, cos_buf[:, dims[:, 1]]) and torch.equal(sin_a, sin_buf[:, dims[:, 1]])
    ):
        raise RopeInterpError(
            f"Layer {layer}: the two dims of each pair have different cos/sin under the "
            f"{layout!r} layout; the model's rotary_adjacent_pairs setting looks wrong."
        )
    return cos_a, sin_a


def _full_tables(attn, rotary_dim: int, cfg) -> tuple[Tensor, Tensor]:
    """The layer's cos/sin for every position up to n_ctx (TransformerLens caches only the
    first 2048 rows and extends them lazily with the same function)."""
    cos, sin = attn.rotary_cos.detach(), attn.rotary_sin.detach()
    if cos.shape[0] < cfg.n_ctx:
        sin_full, cos_full = attn.calculate_sin_cos_rotary(
            rotary_dim, cfg.n_ctx, base=attn._rotary_base(), dtype=cos.dtype
        )
        cos_full, sin_full = cos_full.to(cos.device), sin_full.to(sin.device)
        if not (torch.equal(cos_full[: len(cos)], cos) and torch.equal(sin_full[: len(sin)], sin)):
            raise RopeInterpError(
                "The model's rotary_cos/rotary_sin buffers differ from what its own "
                "calculate_sin_cos_rotary produces; were they edited in place?"
            )
        cos, sin = cos_full, sin_full
    return cos, sin


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


def _check_index(what: str, value: int, size: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < size:
        raise RopeInterpError(
            f"{what} {value!r} is out of range: this model has {what}s 0..{size - 1}."
        )
    return value
