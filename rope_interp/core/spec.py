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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from rope_interp.core.backends import Layout, backend_for, expected_thetas, pair_dims
from rope_interp.core.backends._geometry import check_thetas, theta_rtol
from rope_interp.core.backends.base import Backend
from rope_interp.core.backends.bridge import BridgeBackend
from rope_interp.core.backends.hooked import HookedBackend
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel

__all__ = [
    "Layout",
    "RotarySpec",
    "check_thetas",
    "expected_thetas",
    "first_partial_pair",
    "pair_dims",
    "spec_for",
    "theta_rtol",
]


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
        bound: the `Backend` of the model the spec was read from (where its true q/k are
            read), set by `from_model`; None for a spec built by hand. Code handed the spec
            reads q/k through `spec.backend` without asking the model again.
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
    bound: Backend | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # θ is small metadata read into tables and figures: kept as float64 on the CPU whatever
        # device the model (and its cos/sin tables) is on.
        object.__setattr__(self, "thetas", self.thetas.detach().to("cpu", torch.float64))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: HostModel, check_config: bool = True) -> RotarySpec:
        """Read the spec from a `HookedTransformer` (or a `TransformerBridge`) with rotary
        attention; a model that cannot be decomposed exactly raises `UnsupportedModel`."""
        backend = backend_for(model)
        backend.check_decomposable()
        if isinstance(backend, BridgeBackend):
            return cls(**backend.geometry(check_config=check_config), bound=backend)
        if not isinstance(backend, HookedBackend):  # backend_for knows no third kind
            raise RopeInterpError(f"No rotary reader for a {type(model).__name__}.")
        key = _buffer_key(model, check_config)
        cached = _SPEC_CACHE.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        spec = cls._read(model, backend, check_config)
        _SPEC_CACHE[model] = (key, spec)
        return spec

    @classmethod
    def _read(cls, model: HostModel, backend: HookedBackend, check_config: bool) -> RotarySpec:
        cfg = model.cfg
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
                cos_a, sin_a = _pair_tables(backend, layer, dims, layout)
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
            bound=backend,
        )

    @property
    def backend(self) -> Backend:
        """The backend of the model this spec was read from (`RopeInterpError` if built by
        hand)."""
        if self.bound is None:
            raise RopeInterpError(
                "This RotarySpec was built by hand, not read from a model, so it does not know "
                "where the model's q/k are read; use RotarySpec.from_model(model)."
            )
        return self.bound

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

    def resolve_layers(self, layers: int | Iterable[int] | None) -> list[int]:
        """`None` → all layers; an int or iterable → validated, sorted, de-duplicated list."""
        if layers is None:
            return list(range(self.n_layers))
        if isinstance(layers, int):
            layers = [layers]
        chosen = sorted({self.check_layer(int(layer)) for layer in layers})
        if not chosen:
            raise RopeInterpError("layers is empty: name at least one layer, or None for all.")
        return chosen

    def summary(self) -> str:
        bases = sorted(set(self.bases))
        return (
            f"RoPE: {self.n_layers} layers, {self.n_heads} heads ({self.n_kv_heads} KV), d_head "
            f"{self.d_head}, rotary_dim {self.rotary_dim} ({self.n_pairs} pairs, {self.n_pass} "
            f"pass-through dims), layout {self.layout}, base {', '.join(f'{b:g}' for b in bases)}"
        )


def first_partial_pair(rotary_dim: int, base: float, context: int) -> int:
    """Closed form: ⌈(rotary_dim/2)·ln(L/2π)/ln(base)⌉, the first pair with θ_i·L < 2π."""
    return math.ceil((rotary_dim / 2) * math.log(context / (2 * math.pi)) / math.log(base))


def spec_for(model: Any, spec: RotarySpec | None = None) -> RotarySpec:
    """The spec that code working on `model` uses: `spec` when the caller bound it once and
    passes it down, else read from `model` (without the config check; cached per model, for
    calls such as `capture(model, tokens)` that bring none). A spec bound to another model is
    refused: its backend would read q/k through that model's modules."""
    if spec is None:
        return RotarySpec.from_model(model, check_config=False)
    if spec.bound is None or spec.bound.model is not model:
        raise RopeInterpError(
            "spec= was not read from this model; pass RotarySpec.from_model(model) of the "
            "same model object, or leave spec out."
        )
    return spec


# Specs already read, per model; reused while its rotary buffers are the same tensors, unmodified.
_SPEC_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _buffer_key(model: HostModel, check_config: bool) -> tuple:
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


def _pair_tables(backend: HookedBackend, layer: int, dims: Tensor, layout: str):
    """Pair-indexed `[n_ctx, n_pairs]` cos and sin of one layer, checked against the layout."""
    cos_buf, sin_buf = backend.rotary_tables(layer)
    cos_a, sin_a = cos_buf[:, dims[:, 0]], sin_buf[:, dims[:, 0]]
    if not (
        torch.equal(cos_a, cos_buf[:, dims[:, 1]]) and torch.equal(sin_a, sin_buf[:, dims[:, 1]])
    ):
        raise RopeInterpError(
            f"Layer {layer}: the two dims of each pair have different cos/sin under the "
            f"{layout!r} layout; the model's rotary_adjacent_pairs setting looks wrong."
        )
    return cos_a, sin_a


def _check_index(what: str, value: int, size: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < size:
        raise RopeInterpError(
            f"{what} {value!r} is out of range: this model has {what}s 0..{size - 1}."
        )
    return value
