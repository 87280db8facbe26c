"""Local Hugging Face checkpoint directories (config.json + safetensors) as `HookedTransformer`s.

The config is converted by TransformerLens's own `convert_hf_model_config` (Gemma-2, Gemma-3 and
OLMo-2, which TransformerLens maps only from official names, by the fields of those entries read
from the checkpoint's config), the weights by TransformerLens's own converters
(`transformer_lens.pretrained.weight_conversions`), with no layer-norm folding or centring, so q
and k are the model's real ones. A RoPE scaling that TransformerLens would not reproduce
(YaRN, dynamic, LongRoPE on these architectures) is refused with the reason instead of loading
a model with the wrong frequencies.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rope_interp.errors import RopeInterpError
from rope_interp.loading.hf_loading import quiet
from rope_interp.loading.model_files import check_checkpoint_dir, library_errors, read_config

# Architecture (config.json "architectures"[0]) -> name of its TransformerLens weight converter.
CONVERTERS = {
    "LlamaForCausalLM": "convert_llama_weights",
    "MistralForCausalLM": "convert_mistral_weights",
    "Qwen2ForCausalLM": "convert_qwen2_weights",
    "Qwen3ForCausalLM": "convert_qwen3_weights",
    "Gemma2ForCausalLM": "convert_gemma_weights",
    "Gemma3ForCausalLM": "convert_gemma_weights",
    "Phi3ForCausalLM": "convert_phi3_weights",
    "Olmo2ForCausalLM": "convert_olmo2_weights",
    "GPTNeoXForCausalLM": "convert_neox_weights",
    "GPTJForCausalLM": "convert_gptj_weights",
}


def is_checkpoint_dir(name: str | os.PathLike) -> bool:
    """True for a directory holding an entry named config.json (whether it is a valid config
    is `rope_interp.loading.model_files.check_checkpoint_dir`'s question)."""
    path = Path(name).expanduser()
    return path.is_dir() and os.path.lexists(path / "config.json")


def checkpoint_architecture(path: str | os.PathLike) -> str:
    """The architecture named by the directory's config.json (e.g. "LlamaForCausalLM")."""
    config_file = Path(path).expanduser() / "config.json"
    config = read_config(config_file)
    architectures = config.get("architectures") or []
    if not architectures:
        raise RopeInterpError(
            f'{config_file} names no architecture ("architectures": [...]); rope-interp needs '
            f"one of {sorted(CONVERTERS)}."
        )
    return str(architectures[0])


def hooked_config(path: str | os.PathLike) -> dict[str, Any]:
    """`HookedTransformerConfig` fields for the checkpoint (TransformerLens's conversion plus
    the RoPE scaling checks); raises `RopeInterpError` naming the architecture if unsupported."""
    from transformers import AutoConfig

    path = Path(path).expanduser()
    arch = checkpoint_architecture(path)
    if arch not in CONVERTERS:
        raise RopeInterpError(
            f"{path}: architecture {arch} is not supported for local checkpoints; rope-interp "
            f"loads {', '.join(sorted(CONVERTERS))}."
        )
    with library_errors(f"The config of checkpoint {path}"):
        hf_config = AutoConfig.from_pretrained(str(path))
    if arch in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        cfg = _gemma_config(hf_config, arch)
    elif arch == "Olmo2ForCausalLM":
        cfg = _olmo2_config(hf_config)
        _add_rope_scaling(cfg, hf_config, arch)
    else:
        cfg = _tl_config(path)
        # TransformerLens 3.9 leaves GPT-NeoX's base at its 10 000 default whatever the
        # checkpoint says (transformers 5 keeps it in rope_parameters).
        base = rope_parameters(hf_config).get("rope_theta")
        if "rotary_base" not in cfg and base is not None:
            cfg["rotary_base"] = float(base)
        _add_rope_scaling(cfg, hf_config, arch)
    cfg["original_architecture"] = arch
    cfg["tokenizer_name"] = None
    return cfg


def load_checkpoint(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_ctx: int | None = None,
    n_devices: int = 1,
) -> Any:
    """Load a local Hugging Face checkpoint directory as a `HookedTransformer` (no folding)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained import weight_conversions
    from transformers import AutoModelForCausalLM

    path = Path(path).expanduser()
    check_checkpoint_dir(path)
    with library_errors(f"Checkpoint {path}"):
        cfg_dict = hooked_config(path)
        if n_ctx is not None:
            cfg_dict["n_ctx"] = int(n_ctx)
        cfg = HookedTransformerConfig(
            **cfg_dict, device=str(device), dtype=dtype, n_devices=int(n_devices)
        )
        with quiet():
            hf_model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=torch.float32, use_safetensors=True, trust_remote_code=False
            )
        converter = getattr(weight_conversions, CONVERTERS[cfg.original_architecture])
        state_dict = converter(hf_model, cfg)
        model = HookedTransformer(cfg, tokenizer=_tokenizer(path), move_to_device=False)
        model.load_and_process_state_dict(
            {k: v.detach().to(dtype) for k, v in state_dict.items()},
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
        )
    check_against_checkpoint(model, hf_model, cfg.original_architecture)
    del hf_model
    if int(n_devices) > 1:
        model.move_model_modules_to_device()
    else:
        model.to(device)
    return model.eval()


def check_against_checkpoint(model: Any, hf_model: Any, arch: str) -> None:
    """Raise `RopeInterpError` unless the built model rotates every layer by the frequencies the
    checkpoint's own rotary module computes (its `inv_freq` after scaling, per layer type):
    a conversion that misread a `rope_parameters` field is refused, naming the layer."""
    from rope_interp.core.backends._geometry import check_thetas
    from rope_interp.core.spec import RotarySpec
    from rope_interp.loading.hf_loading import hf_frequencies

    spec = RotarySpec.from_model(model, check_config=False)
    frequencies = hf_frequencies(hf_model)
    layer_types = getattr(hf_model.config.get_text_config(), "layer_types", None)
    for layer, thetas in enumerate(spec.thetas):
        key = "all" if "all" in frequencies or layer_types is None else layer_types[layer]
        expected = frequencies[key]
        if expected.shape != thetas.shape:
            raise RopeInterpError(
                f"{arch}: layer {layer} rotates {thetas.numel()} pairs but the checkpoint's "
                f"rotary module has {expected.numel()} frequencies (check rotary_dim / "
                "partial_rotary_factor)."
            )
        what = f"the checkpoint's own rotary module ({key} frequencies, rope_parameters)"
        check_thetas(thetas, expected, spec.cos[layer].dtype, f"{arch} layer {layer}", what)


def _tl_config(path: Path) -> dict[str, Any]:
    """TransformerLens's conversion, called on a neutral directory name: its converter picks
    some branches by substrings of the name ("llama", "gemma"), which a local path may hold."""
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    with tempfile.TemporaryDirectory() as tmp:
        neutral = Path(tmp) / "checkpoint"
        neutral.mkdir()
        (neutral / "config.json").write_text((path / "config.json").read_text())
        try:
            return dict(convert_hf_model_config(str(neutral)))
        except (NotImplementedError, AttributeError, KeyError, TypeError) as error:
            raise RopeInterpError(
                f"{path}: TransformerLens cannot convert this config ({error})."
            ) from None


# ---- reading a transformers config: shared with the GGUF loader (models.py) ------------------
def hf_dims(hf_config: Any) -> dict[str, Any]:
    """The shape fields of a `HookedTransformerConfig` from a transformers (decoder) config."""
    n_heads = hf_config.num_attention_heads
    n_kv = getattr(hf_config, "num_key_value_heads", None) or n_heads
    return {
        "d_model": hf_config.hidden_size,
        "d_head": getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads,
        "n_heads": n_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "n_key_value_heads": n_kv if n_kv != n_heads else None,
    }


def rope_parameters(hf_config: Any) -> dict[str, Any]:
    """The config's RoPE parameters (`rope_parameters`, or the older `rope_scaling`)."""
    params = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None)
    return dict(params or {})


def rope_type(params: dict[str, Any]) -> str:
    """The RoPE type of `rope_parameters(hf_config)`: "default", "linear", "llama3", ..."""
    return str(params.get("rope_type") or params.get("type") or "default").lower()


def llama3_scaling(params: dict[str, Any], n_ctx: int) -> dict[str, Any]:
    """TransformerLens's NTK-by-parts fields for Llama 3.1 ("llama3") RoPE scaling; `n_ctx`
    stands in for a missing original context length."""
    return {
        "use_NTK_by_parts_rope": True,
        "NTK_by_parts_factor": float(params.get("factor", 8.0)),
        "NTK_by_parts_low_freq_factor": float(params.get("low_freq_factor", 1.0)),
        "NTK_by_parts_high_freq_factor": float(params.get("high_freq_factor", 4.0)),
        "NTK_original_ctx_len": int(params.get("original_max_position_embeddings", n_ctx)),
    }


def _add_rope_scaling(cfg: dict[str, Any], hf_config: Any, arch: str) -> None:
    """Make TransformerLens's config carry the checkpoint's RoPE scaling, or refuse."""
    params = rope_parameters(hf_config)
    kind = rope_type(params)
    if kind == "default":
        return
    if kind == "llama3" and cfg.get("use_NTK_by_parts_rope"):
        return
    if kind == "llama3" and arch in ("LlamaForCausalLM", "MistralForCausalLM"):
        cfg.update(llama3_scaling(params, hf_config.max_position_embeddings))
        return
    if kind == "linear":
        cfg["rotary_scaling_factor"] = float(params["factor"])
        return
    raise RopeInterpError(
        f"{arch}: RoPE scaling {kind!r} is not reproduced by TransformerLens 3.9's "
        "conversion of this architecture, so the model would rotate with the wrong "
        "frequencies; rope-interp loads default, linear and llama3 scaling here."
    )


def _gemma_config(hf_config: Any, arch: str) -> dict[str, Any]:
    """TransformerLens's Gemma-2/Gemma-3 configuration, read from the checkpoint's config (the
    fields of TransformerLens's official gemma-2-2b / gemma-3-1b entries)."""
    layer_types = list(getattr(hf_config, "layer_types", None) or [])
    attn_types = ["local" if t == "sliding_attention" else "global" for t in layer_types]
    dims = hf_dims(hf_config)
    cfg: dict[str, Any] = {
        **dims,
        "act_fn": getattr(hf_config, "hidden_activation", None) or "gelu_pytorch_tanh",
        "initializer_range": hf_config.initializer_range,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": dims["d_head"],
        "use_attn_scale": True,
        "attn_scale": math.sqrt(hf_config.query_pre_attn_scalar),
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
    }
    if "local" in attn_types:
        cfg.update(window_size=hf_config.sliding_window, use_local_attn=True, attn_types=attn_types)
    params = rope_parameters(hf_config)
    if arch == "Gemma2ForCausalLM":
        if rope_type(params) != "default":
            raise RopeInterpError(f"{arch}: RoPE scaling {rope_type(params)!r} is not supported.")
        cfg["rotary_base"] = float(params.get("rope_theta", 10000.0))
        if getattr(hf_config, "attn_logit_softcapping", None):
            cfg["attn_scores_soft_cap"] = float(hf_config.attn_logit_softcapping)
        if getattr(hf_config, "final_logit_softcapping", None):
            cfg["output_logits_soft_cap"] = float(hf_config.final_logit_softcapping)
        return cfg
    full = params.get("full_attention", params)
    local = params.get("sliding_attention", params)
    if rope_type(local) != "default" or rope_type(full) not in ("default", "linear"):
        raise RopeInterpError(
            f"{arch}: RoPE scaling (global {rope_type(full)!r}, local {rope_type(local)!r}) "
            "is not reproduced by TransformerLens 3.9; it supports linear scaling of the "
            "global layers only."
        )
    cfg["rotary_base"] = float(full.get("rope_theta", 1_000_000.0))
    cfg["rotary_base_local"] = float(
        local.get("rope_theta", getattr(hf_config, "rope_local_base_freq", 10000.0))
    )
    if rope_type(full) == "linear":
        cfg["rotary_scaling_factor"] = float(full["factor"])
    cfg["use_qk_norm"] = True
    return cfg


def _olmo2_config(hf_config: Any) -> dict[str, Any]:
    """TransformerLens's OLMo-2 configuration (its allenai/OLMo-2 entries), read from the
    checkpoint's config."""
    d_head = hf_config.hidden_size // hf_config.num_attention_heads  # OLMo-2: no head_dim
    return {
        **hf_dims(hf_config),
        "d_head": d_head,
        "act_fn": hf_config.hidden_act,
        "initializer_range": hf_config.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": float(rope_parameters(hf_config).get("rope_theta", 10000.0)),
        "rotary_dim": d_head,
        "attn_types": ["global"] * hf_config.num_hidden_layers,
        "positional_embedding_type": "rotary",
        "gated_mlp": True,
    }


def _tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer, or None when the directory has none."""
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
    if not any((path / name).is_file() for name in names):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
