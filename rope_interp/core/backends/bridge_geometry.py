"""A TransformerLens 4.x `TransformerBridge`'s rotary geometry, read from the wrapped model.

A bridge wraps a transformers model (`bridge.original_model`) or a TL-native one
(`TransformerBridge.boot_native`). Its config's rotary fields can be wrong (TL 4.3.0 reports
base 10 000 for SmolLM2, which uses 100 000; `rotary_dim` None; GPT-J's layout as half-split),
so nothing here reads them: the spec comes from the wrapped model's own config and rotary
embedding module (`inv_freq`, `attention_scaling`, `rope_parameters`), and the cos/sin tables
are the ones that module produces. The layout is then checked by rotating a probe vector with
the model's own rotation function.

Nothing here imports HookedTransformer, so the module loads under TransformerLens 4.
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from rope_interp.core.backends._geometry import (
    Layout,
    check_thetas,
    expected_thetas,
    pair_dims,
)
from rope_interp.errors import UnsupportedBridge

__all__ = ["architecture", "bridge_geometry", "is_bridge"]

# Longest cos/sin table built (positions); longer contexts get the first _MAX_TABLE rows.
_MAX_TABLE = 131_072
# float32 cos/sin from different code paths agree to a few ulps.
_ROTATE_ATOL = 1e-5
# Rope types whose θ_i rope-interp recomputes from the config (TransformerLens's formulas).
_FORMULA_ROPE_TYPES = ("default", "linear", "llama3")


def is_bridge(model: Any) -> bool:
    """True for a TransformerLens `TransformerBridge` (any version), without importing it."""
    return any(klass.__name__ == "TransformerBridge" for klass in type(model).__mro__)


def architecture(bridge: Any) -> str:
    """A readable name for the wrapped model, e.g. "GPTNeoXForCausalLM (gpt_neox)"."""
    model = getattr(bridge, "original_model", None)
    if model is None:
        return "unknown architecture"
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    name = type(model).__name__
    return f"{name} ({model_type})" if model_type else name


@dataclass
class _Rotary:
    """What one rotary source (HF module or TL-native) gives: per-dim cos/sin of the width the
    model uses, a way to rotate probe vectors with the model's own code, and its parameters."""

    cos: Tensor  # [n_positions, width]
    sin: Tensor
    rotary_dim: int
    apply: Callable[[Tensor], Tensor] | None  # [batch, pos, head, rotary_dim] -> rotated
    inv_freq: Tensor | None
    attention_scaling: float
    rope_type: str
    rope_params: dict
    base: float | None
    # dtype of the module's own frequency buffer: `model.to(torch.bfloat16)` casts inv_freq,
    # and the model then rotates by the rounded frequencies (the θ checks allow for that).
    buffer_dtype: torch.dtype = torch.float32


def bridge_geometry(bridge: Any, check_config: bool = True) -> dict[str, Any]:
    """Read a `TransformerBridge`'s rotary geometry: the fields of a `RotarySpec`.

    The frequencies are the angles of the cos/sin the wrapped model's rotary module produces;
    they are checked against the module's `inv_freq` always and, with `check_config`, against
    TransformerLens's formula for the config's `rope_parameters` (default, linear, llama3). The
    layout (half-split or interleaved) is whichever reproduces the model's own rotation of a
    probe vector; neither raises `UnsupportedBridge`.
    """
    arch = architecture(bridge)
    hf_model = getattr(bridge, "original_model", None)
    if hf_model is None:
        raise UnsupportedBridge("This TransformerBridge has no original_model to read.")
    native = _native_rotary(hf_model)
    if native is not None:
        dims = _native_dims(bridge)
        rotaries = [native] * dims["n_layers"]
        attn_scale = dims.pop("attn_scale")
    else:
        config = _text_config(hf_model)
        dims = _hf_dims(config, arch)
        rotaries = _hf_rotaries(hf_model, config, dims, arch)
        attn_scale = _hf_attn_scale(hf_model, dims["d_head"])
    # One table per distinct rotary module setting (Gemma 3: sliding and full attention).
    tables = {id(r): _checked_tables(r, arch, check_config) for r in rotaries}
    layouts = {layout for _, _, _, layout in tables.values()}
    if len(layouts) > 1:
        raise UnsupportedBridge(f"{arch}: its layer types pair dims differently ({layouts}).")
    # transformers computes cos/sin in float32 and casts them to the activations' dtype, so
    # the tables the model applies are these, rounded to its dtype (bf16: 2^-8).
    dtype = _model_dtype(hf_model)
    per_layer = [tables[id(r)] for r in rotaries]
    return dict(
        n_layers=dims["n_layers"],
        n_heads=dims["n_heads"],
        n_kv_heads=dims["n_kv_heads"],
        d_head=dims["d_head"],
        rotary_dim=rotaries[0].rotary_dim,
        layout=layouts.pop(),
        attn_scale=float(attn_scale),
        n_ctx=dims["n_ctx"],
        thetas=torch.stack([theta for _, _, theta, _ in per_layer]),
        cos=[cos.to(dtype) for cos, _, _, _ in per_layer],
        sin=[sin.to(dtype) for _, sin, _, _ in per_layer],
        bases=tuple(float(r.base or float("nan")) for r in rotaries),
    )


def _checked_tables(
    rotary: _Rotary, arch: str, check_config: bool
) -> tuple[Tensor, Tensor, Tensor, Layout]:
    """(cos, sin [n_positions, n_pairs], θ [n_pairs] float64, layout) of one rotary module,
    θ checked against its inv_freq and (with `check_config`) the config's formula."""
    cos_p, sin_p = _pair_tables(rotary.cos, rotary.sin, rotary.rotary_dim // 2, arch)
    theta = torch.atan2(sin_p[1].double(), cos_p[1].double())
    if rotary.inv_freq is not None:
        inv_freq = rotary.inv_freq.double()
        _check_close(theta, inv_freq, arch, "its rotary module's inv_freq", rotary.buffer_dtype)
    if check_config and rotary.rope_type in _FORMULA_ROPE_TYPES and rotary.base is not None:
        expected = expected_thetas(
            _formula_cfg(rotary.rope_type, rotary.rope_params), rotary.rotary_dim, rotary.base
        )
        _check_close(
            theta,
            expected,
            arch,
            f"the config's {rotary.rope_type!r} RoPE formula",
            rotary.buffer_dtype,
        )
    return cos_p, sin_p, theta, _detect_layout(rotary, cos_p, sin_p, arch)


def _hf_rotaries(hf_model: Any, config: Any, dims: dict[str, int], arch: str) -> list[_Rotary]:
    """The rotary setting of each layer: one for all, or one per layer type where the config
    has per-layer-type `rope_parameters` (Gemma 3's sliding/full attention)."""
    params = getattr(config, "rope_parameters", None) or {}
    layer_types = getattr(config, "layer_types", None)
    if not (params and all(isinstance(v, dict) for v in params.values())):
        return [_hf_rotary(hf_model, config, dims, arch)] * dims["n_layers"]
    if not layer_types or any(t not in params for t in layer_types):
        raise UnsupportedBridge(
            f"{arch}: per-layer-type RoPE parameters {sorted(params)} but layer_types "
            f"{layer_types} do not name one for every layer."
        )
    by_type = {t: _hf_rotary(hf_model, config, dims, arch, t) for t in dict.fromkeys(layer_types)}
    return [by_type[t] for t in layer_types]


def _model_dtype(hf_model: Any) -> torch.dtype:
    """The floating dtype of the wrapped model's parameters (float32 if it has none)."""
    for parameter in hf_model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _text_config(hf_model: Any) -> Any:
    config = hf_model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _hf_dims(config: Any, arch: str) -> dict[str, int]:
    n_heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not n_heads or not hidden:
        raise UnsupportedBridge(f"{arch}: the config names no num_attention_heads/hidden_size.")
    d_head = getattr(config, "head_dim", None) or hidden // n_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_ctx", None)
    return dict(
        n_layers=int(config.num_hidden_layers),
        n_heads=int(n_heads),
        n_kv_heads=int(n_kv),
        d_head=int(d_head),
        n_ctx=int(n_ctx or 2048),
    )


def _rope_params(config: Any, layer_type: str | None = None) -> dict:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    params = dict(params or {})
    return dict(params[layer_type]) if layer_type is not None else params


def _hf_rotary(
    hf_model: Any, config: Any, dims: dict[str, int], arch: str, layer_type: str | None = None
) -> _Rotary:
    module = _find_rotary_module(hf_model, arch)
    params = _rope_params(config, layer_type)
    # Per-layer-type modules (Gemma 3) take the layer type and keep one buffer per type.
    by_type = {} if layer_type is None else {"layer_type": layer_type}
    prefix = "" if layer_type is None else f"{layer_type}_"
    module_type = getattr(module, "rope_type", None)  # a dict per type on Gemma 3
    rope_type = str(
        (module_type if isinstance(module_type, str) else None)
        or params.get("rope_type")
        or params.get("type")
        or "default"
    ).lower()
    # rotary_dim: GPT-J names it; partial rotary (GPT-NeoX, Phi) gives a factor.
    rotary_dim = getattr(config, "rotary_dim", None)
    if not isinstance(rotary_dim, int):
        factor = params.get("partial_rotary_factor")
        if factor is None:
            factor = getattr(config, "partial_rotary_factor", None) or getattr(
                config, "rotary_pct", None
            )
            factor = 1.0 if factor is None else factor
        rotary_dim = int(dims["d_head"] * float(factor))
    n_ctx = min(dims["n_ctx"], _MAX_TABLE)
    if rope_type in ("dynamic", "longrope"):
        # These re-derive inv_freq from the sequence length; stay within the trained length.
        original = params.get("original_max_position_embeddings") or getattr(
            config, "original_max_position_embeddings", None
        )
        n_ctx = min(n_ctx, int(original or n_ctx))
    # A copy: dynamic RoPE variants update their buffers on long inputs.
    module_copy = copy.deepcopy(module).float().cpu()
    positions = torch.arange(n_ctx)[None]
    probe = torch.zeros(1, n_ctx, dims["d_head"], dtype=torch.float32)
    with torch.no_grad():
        out = module_copy(probe, positions, **by_type)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise UnsupportedBridge(f"{arch}: its rotary module does not return a (cos, sin) pair.")
    first, second = (t[0].detach().float().cpu() for t in out)
    # HF returns (cos, sin) except GPT-J's (sin, cos): at position 0, cos = scale and sin = 0.
    if first[0].abs().max() == 0 and second[0].abs().min() > 0:
        sin, cos, order = first, second, "sin_cos"
    else:
        cos, sin, order = first, second, "cos_sin"
    if sin[0].abs().max() != 0:
        raise UnsupportedBridge(f"{arch}: its rotary module's sin is not 0 at position 0.")
    if cos.shape[-1] not in (rotary_dim, rotary_dim // 2):
        raise UnsupportedBridge(
            f"{arch}: the rotary module's cos/sin have width {cos.shape[-1]}, which fits "
            f"neither rotary_dim={rotary_dim} nor its half (config head_dim {dims['d_head']})."
        )
    inv_freq = getattr(module, f"{prefix}inv_freq", None)  # GPT-J: a sin/cos table instead
    base = params.get("rope_theta", getattr(config, "rope_theta", None))
    if base is None and getattr(config, "model_type", None) == "gptj":
        base = 10000.0  # transformers' create_sinusoidal_positions hard-codes it
    attention_scaling = float(getattr(module, f"{prefix}attention_scaling", 1.0) or 1.0)
    apply = _hf_apply(hf_model, module, order, arch, by_type)
    return _Rotary(
        cos=cos,
        sin=sin,
        rotary_dim=rotary_dim,
        apply=apply,
        inv_freq=None if inv_freq is None else inv_freq.detach().float().cpu(),
        attention_scaling=attention_scaling,
        rope_type=rope_type,
        rope_params=params,
        base=None if base is None else float(base),
        buffer_dtype=next(
            (b.dtype for b in module.buffers() if b.is_floating_point()), torch.float32
        ),
    )


def _find_rotary_module(hf_model: Any, arch: str) -> Any:
    found = [
        (name, module)
        for name, module in hf_model.named_modules()
        if name.split(".")[-1] == "rotary_emb"
    ]
    shared = [item for item in found if ".layers." not in item[0] and ".h." not in item[0]]
    if len(shared) == 1:
        module = shared[0][1]
        # The bridge swaps in a RotaryEmbeddingBridge; read the HF module it wraps.
        return getattr(module, "original_component", None) or module
    if not found:
        raise UnsupportedBridge(
            f"{arch}: no rotary_emb module found in the wrapped model; rope-interp reads the "
            "rotary frequencies from it. Is this a rotary model?"
        )
    raise UnsupportedBridge(
        f"{arch}: {len(found)} rotary_emb modules ({[n for n, _ in found][:3]}...); "
        "per-layer rotary embeddings are not supported on bridges yet."
    )


def _hf_apply(
    hf_model: Any, module: Any, order: str, arch: str, by_type: dict[str, str]
) -> Callable | None:
    """The modeling file's own `apply_rotary_pos_emb`, wrapped to rotate `[b, s, h, d]`.

    transformers may wrap the function (an `nn.Module` "Func" hub-kernel wrapper since 5.25, a
    `functools.wraps` decorator), so its parameters are read from the first of the function,
    its `forward` and its unwrapped original that names them; the wrapper itself is what gets
    called. Where none names them, the calling convention follows the rotary module's output
    order. Either way `_detect_layout` checks the result by calling it, so a wrong convention
    is refused, never used.
    """
    modeling = sys.modules.get(type(hf_model).__module__)
    fn = getattr(modeling, "apply_rotary_pos_emb", None)
    if fn is None:
        return None
    params = _parameter_names(fn)
    module_copy = copy.deepcopy(module).float().cpu()

    def tables(x: Tensor) -> tuple[Tensor, Tensor]:
        positions = torch.arange(x.shape[1], device=x.device)[None]
        return module_copy(x.new_zeros(1, x.shape[1], x.shape[-1]), positions, **by_type)

    if params[:4] == ["q", "k", "cos", "sin"] or (params is _OPAQUE and order == "cos_sin"):

        def apply(x: Tensor) -> Tensor:  # Llama/Qwen2/GPT-NeoX...: q is [b, h, s, d]
            cos, sin = tables(x)
            q = x.transpose(1, 2)
            return fn(q, q, cos, sin)[0].transpose(1, 2)

        return apply
    if (params[:3] == ["tensor", "sin", "cos"] or params is _OPAQUE) and order == "sin_cos":

        def apply(x: Tensor) -> Tensor:  # GPT-J: tensor is [b, s, h, d]
            sin, cos = tables(x)
            return fn(x, sin, cos)

        return apply
    return None


# What `_parameter_names` returns when no layer of a wrapped function names its parameters.
_OPAQUE: list[str] = []


def _parameter_names(fn: Any) -> list[str]:
    """Positional parameter names of `fn`, looking through wrappers: the callable itself, an
    `nn.Module`'s `forward`, and `__wrapped__` chains (`functools.wraps`)."""
    candidates = [fn, getattr(fn, "forward", None)]
    candidates += [inspect.unwrap(c) for c in candidates if c is not None]
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            signature = inspect.signature(candidate)
        except (TypeError, ValueError):
            continue
        names = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if names:
            return names
    return _OPAQUE


def _native_rotary(model: Any) -> _Rotary | None:
    """TL-native models (`boot_native`): a `NativeRotary` with cos/sin caches."""
    rotary = next((m for m in model.modules() if type(m).__name__ == "NativeRotary"), None)
    if rotary is None:
        return None
    cos, sin = rotary.cos_cached.detach().float().cpu(), rotary.sin_cached.detach().float().cpu()

    def apply(x: Tensor) -> Tensor:
        q = x.transpose(1, 2)
        return rotary.apply_rope(q, q)[0].transpose(1, 2)

    scaling = getattr(getattr(model, "cfg", None), "rope_scaling", None)
    rope_type = "default"
    if isinstance(scaling, dict):
        rope_type = str(scaling.get("rope_type") or scaling.get("type") or "default").lower()
    return _Rotary(
        cos=cos,
        sin=sin,
        rotary_dim=int(rotary.rotary_dim),
        apply=apply,
        inv_freq=None,
        attention_scaling=1.0,
        rope_type=rope_type if rope_type != "default" else "native",
        rope_params=dict(scaling or {}),
        base=float(rotary.effective_base),
    )


def _native_dims(bridge: Any) -> dict[str, Any]:
    cfg = bridge.cfg
    attn = next(m for m in bridge.original_model.modules() if type(m).__name__ == "NativeAttention")
    return dict(
        n_layers=int(cfg.n_layers),
        n_heads=int(attn.n_heads),
        n_kv_heads=int(attn.n_kv_heads),
        d_head=int(attn.d_head),
        n_ctx=int(cfg.n_ctx),
        attn_scale=float(attn.scale),
    )


def _hf_attn_scale(hf_model: Any, d_head: int) -> float:
    """The divisor of q·k: 1/`scaling` of the first attention module (HF convention)."""
    for module in hf_model.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, float) and hasattr(module, "head_dim"):
            return 1.0 / scaling
    return math.sqrt(d_head)


def _pair_tables(cos: Tensor, sin: Tensor, n_pairs: int, arch: str) -> tuple[Tensor, Tensor]:
    """Per-dim tables → per-pair `[n_positions, n_pairs]` (one entry per frequency)."""
    width = cos.shape[-1]
    if width == n_pairs:
        return cos.clone(), sin.clone()
    halves = torch.equal(cos[:, :n_pairs], cos[:, n_pairs:]) and torch.equal(
        sin[:, :n_pairs], sin[:, n_pairs:]
    )
    if halves:  # HF: cat(freqs, freqs)
        return cos[:, :n_pairs].clone(), sin[:, :n_pairs].clone()
    if torch.equal(cos[:, 0::2], cos[:, 1::2]) and torch.equal(sin[:, 0::2], sin[:, 1::2]):
        return cos[:, 0::2].clone(), sin[:, 0::2].clone()  # repeat_interleave (TL-native)
    raise UnsupportedBridge(
        f"{arch}: cannot tell which dims of the rotary module's cos/sin belong to which "
        "frequency (neither duplicated halves nor repeated pairs)."
    )


def _detect_layout(rotary: _Rotary, cos_p: Tensor, sin_p: Tensor, arch: str) -> Layout:
    """The layout under which rope-interp's rotation equals the model's own rotation."""
    if rotary.apply is None:
        raise UnsupportedBridge(
            f"{arch}: rope-interp cannot call this model's rotation function to check the "
            "rotary layout (half-split or interleaved), so it will not guess. Supported: "
            "models whose modeling file has apply_rotary_pos_emb(q, k, cos, sin) (Llama, "
            "Qwen2, Mistral, GPT-NeoX, ...), GPT-J, and boot_native bridges."
        )
    n = min(cos_p.shape[0], 16)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, n, 2, rotary.rotary_dim, generator=generator)
    with torch.no_grad():
        theirs = rotary.apply(x).float()
    phasor = torch.complex(cos_p[:n], sin_p[:n])[None, :, None, :]
    errors = {}
    for layout in ("half", "interleaved"):
        dims = pair_dims(rotary.rotary_dim, layout)
        z = torch.complex(x[..., dims[:, 0]], x[..., dims[:, 1]]) * phasor
        ours = torch.empty_like(x)
        ours[..., dims[:, 0]], ours[..., dims[:, 1]] = z.real, z.imag
        errors[layout] = (ours - theirs).abs().max().item()
        if errors[layout] <= _ROTATE_ATOL * max(1.0, rotary.attention_scaling):
            return layout
    raise UnsupportedBridge(
        f"{arch}: neither layout reproduces the model's own rotary embedding (max |error| "
        f"half-split {errors['half']:.2e}, interleaved {errors['interleaved']:.2e})."
    )


def _formula_cfg(rope_type: str, params: dict) -> SimpleNamespace:
    cfg = SimpleNamespace(rotary_scaling_factor=1.0)
    if rope_type == "linear":
        cfg.rotary_scaling_factor = float(params["factor"])
    elif rope_type == "llama3":
        cfg.use_NTK_by_parts_rope = True
        cfg.NTK_by_parts_factor = float(params["factor"])
        cfg.NTK_by_parts_low_freq_factor = float(params.get("low_freq_factor", 1.0))
        cfg.NTK_by_parts_high_freq_factor = float(params.get("high_freq_factor", 4.0))
        cfg.NTK_original_ctx_len = float(params["original_max_position_embeddings"])
    return cfg


def _check_close(measured: Tensor, expected: Tensor, arch: str, what: str, dtype) -> None:
    if measured.shape != expected.shape:
        raise UnsupportedBridge(
            f"{arch}: {measured.numel()} rotary frequencies in the cos/sin tables but "
            f"{expected.numel()} in {what}."
        )
    check_thetas(measured, expected, dtype, arch, what)
