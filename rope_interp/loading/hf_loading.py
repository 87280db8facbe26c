"""transformers models from GGUF files, and rotary models as TransformerLens 4
`TransformerBridge`s: the built-in SmolLM2-135M and local GGUF files (dequantized once by
transformers' GGUF loader and cached as a safetensors checkpoint), local Hugging Face checkpoint
directories, and official names.

A bridge runs the transformers model's own weights (no layer-norm folding, no centring), so every
q and k rope-interp reads is the checkpoint's. `models.load_model` calls this when the
installed TransformerLens has no `HookedTransformer`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from rope_interp.loading import model_cache

# Bump when the cached checkpoint's format changes, so stale caches are not reused.
_BRIDGE_CACHE_VERSION = 1
_CACHE_FILES = ("model.safetensors", "config.json", "tokenizer/tokenizer_config.json")


def load_gguf_bridge(
    path: Path, digest: str, cache_root: Path, device: torch.device | str, dtype: torch.dtype
) -> Any:
    """A GGUF file (checked by the caller) as a bridge, through a cached HF checkpoint."""
    key = f"{path.stem}-{digest}-hf-v{_BRIDGE_CACHE_VERSION}"
    hf_model, tokenizer = model_cache.load_cached(
        cache_root,
        key,
        build=lambda folder: _write_hf_checkpoint(path, folder),
        load=lambda folder: _read_hf_checkpoint(folder, dtype),
        source=str(path),
        required=_CACHE_FILES,
    )
    return boot(hf_model, tokenizer, device, dtype, default_prepend_bos=False)


def load_checkpoint_bridge(
    path: str | os.PathLike, device: torch.device, dtype: torch.dtype, n_ctx: int | None
) -> Any:
    """A local Hugging Face checkpoint directory (safetensors weights) as a bridge."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rope_interp.loading.model_files import check_checkpoint_dir, library_errors

    path = Path(path).expanduser()
    check_checkpoint_dir(path)
    overrides = {} if n_ctx is None else {"max_position_embeddings": int(n_ctx)}
    with library_errors(f"Checkpoint {path}"), quiet():
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, use_safetensors=True, trust_remote_code=False, **overrides
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        except (OSError, ValueError):
            tokenizer = None
    return boot(hf_model, tokenizer, device, dtype)


def load_official_bridge(
    name: str, device: torch.device, dtype: torch.dtype, n_ctx: int | None, n_devices: int
) -> Any:
    """An official model name, booted by TransformerLens (needs hub access)."""
    from transformer_lens.model_bridge import TransformerBridge

    kwargs: dict[str, Any] = {"dtype": dtype, "n_ctx": n_ctx}
    if n_devices > 1:
        kwargs["n_devices"] = n_devices
    else:
        kwargs["device"] = device
    with quiet():
        bridge = TransformerBridge.boot_transformers(name, **kwargs)
    return bridge.eval()


def boot(
    hf_model: Any,
    tokenizer: Any,
    device: torch.device | str,
    dtype: torch.dtype,
    default_prepend_bos: bool | None = None,
) -> Any:
    """Wrap an in-memory transformers model in a `TransformerBridge` (offline), on `device`."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=dtype).eval()
    with quiet():
        bridge = TransformerBridge.boot_transformers(
            type(hf_model).__name__,
            hf_model=hf_model,
            tokenizer=tokenizer,
            device=device,
            dtype=dtype,
        )
    if default_prepend_bos is not None:
        bridge.cfg.default_prepend_bos = default_prepend_bos
    return bridge.eval()


def _write_hf_checkpoint(path: Path, folder: Path) -> None:
    """Dequantize the GGUF file into a float32 safetensors checkpoint in `folder` (a private
    staging folder that `model_cache` moves into place whole)."""
    from transformers import AutoModelForCausalLM

    hf_model, tokenizer = read_gguf_model(path)
    # transformers marks a GGUF-loaded model as quantized and will not save it; the weights are
    # already dequantized, so save them through an unmarked model of the same config.
    config = hf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with quiet():
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(hf_model.state_dict())
    with quiet():
        plain.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder / "tokenizer"))


def _read_hf_checkpoint(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet():
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    return hf_model, tokenizer


def read_gguf_model(path: Path) -> tuple[Any, Any]:
    """(transformers model in float32, tokenizer) dequantized from a GGUF file."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rope_interp.loading.model_files import library_errors

    with library_errors(f"GGUF file {path}"), quiet():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    return hf_model, tokenizer


def hf_frequencies(hf_model: Any) -> dict[str, torch.Tensor]:
    """The HF rotary module's frequencies after scaling, by layer type ("all" if one)."""
    rotary = next(m for n, m in hf_model.named_modules() if n.endswith("rotary_emb"))
    found = {
        ("all" if name == "inv_freq" else name.removesuffix("_inv_freq")): buf.double()
        for name, buf in rotary.named_buffers()
        if name.endswith("inv_freq") and "original" not in name
    }
    if found:
        return found
    # GPT-J: a sin/cos table; its frequencies are the angles at position 1.
    table = rotary.embed_positions.double()
    half = table.shape[-1] // 2
    return {"all": torch.atan2(table[1, :half], table[1, half:])}


# transformers builds models inside `no_init_weights`, which swaps torch.nn.init's functions
# for no-ops process-wide and swaps them back on exit: two threads building models at once can
# leave the no-ops in place for good, and every later model uninitialised (garbage weights).
# The redirections below are process-wide too. So loads take turns within a process.
_LOADING = threading.RLock()


@contextlib.contextmanager
def quiet():
    """Build or load one model at a time in this process, with the libraries' chatter
    (deprecation warnings, dequantization progress bars) silenced."""
    with _LOADING:
        level = logging.getLogger("transformers").level
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stderr(io.StringIO()),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                yield
        finally:
            logging.getLogger("transformers").setLevel(level)
