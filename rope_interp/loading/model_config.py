"""The fields of a Hugging Face config.json, checked for type and range before transformers or
TransformerLens build anything from them: a bad value is one `RopeInterpError` that names the
field, its value and what it must be (an invalid `rope_theta` is a config error, not a
frequency mismatch found after loading).

Fields are checked where present (transformers supplies the defaults of missing ones), under
the names the supported families use (Llama-style, GPT-NeoX, GPT-J).
"""

from __future__ import annotations

import math
from typing import Any

from rope_interp.errors import RopeInterpError

# Sizes and counts: a positive integer (or null, where the family allows a default).
_POSITIVE_INTS = (
    "hidden_size",
    "n_embd",
    "num_attention_heads",
    "n_head",
    "num_hidden_layers",
    "n_layer",
    "intermediate_size",
    "n_inner",
    "vocab_size",
    "max_position_embeddings",
    "n_positions",
    "num_key_value_heads",
    "head_dim",
    "rotary_dim",
    "sliding_window",
    "original_max_position_embeddings",
)
# Positive finite numbers (RoPE bases, scales).
_POSITIVE_NUMBERS = (
    "rope_theta",
    "rotary_emb_base",
    "rope_local_base_freq",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
    "final_logit_softcapping",
)
# Fractions in (0, 1].
_FRACTIONS = ("partial_rotary_factor", "rotary_pct")
# Non-negative finite numbers.
_NON_NEGATIVE = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "initializer_range")
# Fields of a RoPE parameter dict (`rope_parameters`, `rope_scaling`).
_ROPE_POSITIVE: tuple[str, ...] = ("rope_theta", "factor", "low_freq_factor", "high_freq_factor")
_ROPE_POSITIVE += ("attention_factor", "mscale", "mscale_all_dim")
_ROPE_FINITE = ("beta_fast", "beta_slow")
# (field names) of the sizes behind a lower bound on the parameter count, by meaning.
_ALIASES = {
    "vocab": ("vocab_size",),
    "hidden": ("hidden_size", "n_embd"),
    "layers": ("num_hidden_layers", "n_layer"),
}


def check_config(config: dict[str, Any], where: str) -> None:
    """Raise `RopeInterpError` naming the first field of `config` (a parsed config.json; for
    multimodal configs, its `text_config` too) whose type or range is wrong."""
    _check_fields(config, where)
    text = config.get("text_config")
    if text is not None:
        if not isinstance(text, dict):
            _invalid(where, "text_config", text, "a JSON object")
        _check_fields(text, f"{where} (text_config)")


def _check_fields(config: dict[str, Any], where: str) -> None:
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise RopeInterpError(
            f'{where} has no model_type (e.g. "llama"); it is not a transformers model config.'
        )
    architectures = config.get("architectures")
    if architectures is not None and not (
        isinstance(architectures, list)
        and architectures
        and all(isinstance(a, str) and a for a in architectures)
    ):
        _invalid(where, "architectures", architectures, 'a list of names ["...ForCausalLM"]')
    for name in _POSITIVE_INTS:
        value = config.get(name)
        if value is not None and not _is_int(value, 1):
            _invalid(where, name, value, "a positive integer")
    for name in _POSITIVE_NUMBERS:
        if name in config and config[name] is not None:
            _positive(where, name, config[name])
    for name in _FRACTIONS:
        value = config.get(name)
        if value is not None and not (_is_number(value) and 0 < value <= 1):
            _invalid(where, name, value, "a number in (0, 1]")
    for name in _NON_NEGATIVE:
        value = config.get(name)
        if value is not None and not (_is_number(value) and value >= 0):
            _invalid(where, name, value, "a finite number ≥ 0")
    for name in ("rope_parameters", "rope_scaling"):
        _check_rope(where, name, config.get(name))
    _check_shapes(config, where)


def _check_shapes(config: dict[str, Any], where: str) -> None:
    heads = config.get("num_attention_heads") or config.get("n_head")
    kv = config.get("num_key_value_heads")
    if heads and kv and heads % kv:
        _invalid(where, "num_key_value_heads", kv, f"a divisor of num_attention_heads ({heads})")
    hidden = config.get("hidden_size") or config.get("n_embd")
    if heads and hidden and not config.get("head_dim") and hidden % heads:
        _invalid(where, "hidden_size", hidden, f"a multiple of the {heads} attention heads")
    layers = config.get("num_hidden_layers")
    layer_types = config.get("layer_types")
    if layer_types is not None and not (
        isinstance(layer_types, list)
        and all(isinstance(t, str) for t in layer_types)
        and (layers is None or len(layer_types) == layers)
    ):
        _invalid(where, "layer_types", layer_types, f"a list of {layers} layer type names")


def _check_rope(where: str, name: str, params: Any) -> None:
    """A RoPE parameter dict: null, one dict, or one dict per layer type (Gemma-3)."""
    if params is None:
        return
    if not isinstance(params, dict):
        _invalid(where, name, params, "a JSON object of RoPE parameters, or null")
    if params and all(isinstance(v, dict) for v in params.values()):
        for layer_type, inner in params.items():
            _check_rope(where, f"{name}.{layer_type}", inner)
        return
    kind = params.get("rope_type", params.get("type"))
    if kind is not None and not isinstance(kind, str):
        _invalid(where, f"{name}.rope_type", kind, 'a name such as "default" or "llama3"')
    for key in _ROPE_POSITIVE:
        if params.get(key) is not None:
            _positive(where, f"{name}.{key}", params[key])
    for key in _ROPE_FINITE:
        value = params.get(key)
        if value is not None and not _is_number(value):
            _invalid(where, f"{name}.{key}", value, "a finite number")
    if params.get("original_max_position_embeddings") is not None and not _is_int(
        params["original_max_position_embeddings"], 1
    ):
        key = f"{name}.original_max_position_embeddings"
        _invalid(where, key, params["original_max_position_embeddings"], "a positive integer")
    value = params.get("partial_rotary_factor")
    if value is not None and not (_is_number(value) and 0 < value <= 1):
        _invalid(where, f"{name}.partial_rotary_factor", value, "a number in (0, 1]")
    for key in ("short_factor", "long_factor"):
        factors = params.get(key)
        if factors is not None and not (
            isinstance(factors, list) and all(_is_number(f) and f > 0 for f in factors)
        ):
            _invalid(where, f"{name}.{key}", factors, "a list of finite numbers > 0")


def minimum_parameters(config: dict[str, Any]) -> int:
    """A lower bound on the parameter count `config` describes (the token embedding and one
    hidden_size vector per layer): weights holding fewer numbers cannot be its weights."""
    sizes = {
        meaning: next((config[n] for n in names if _is_int(config.get(n), 1)), 0)
        for meaning, names in _ALIASES.items()
    }
    return sizes["vocab"] * sizes["hidden"] + sizes["layers"] * sizes["hidden"]


def _positive(where: str, name: str, value: Any) -> None:
    if not (_is_number(value) and value > 0):
        _invalid(where, name, value, "a finite number > 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _invalid(where: str, name: str, value: Any, requirement: str) -> None:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise RopeInterpError(
        f"{where}: config field {name} = {shown} is invalid; it must be {requirement}. Fix the "
        "checkpoint's config.json."
    )
