"""Tiny random rotary models (no downloads) covering the layouts rope-interp must handle:
half-split full rotary, interleaved partial rotary, grouped-query attention and NTK-by-parts
frequencies. rope-interp's own tests run every feature on all of them; use them to try an
analysis in seconds before running it on a real model.

Under TransformerLens 3.x they are `HookedTransformer`s; under 4.x, `TransformerBridge`s around
tiny transformers models of the same geometry (`_BRIDGE_FIXTURES`), so the same tests run on
whichever host is installed.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

try:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:  # TransformerLens >= 4
    HookedTransformer = HookedTransformerConfig = None

HOST = "hooked" if HookedTransformer is not None else "bridge"

_BASE = dict(
    n_layers=2,
    d_model=32,
    n_ctx=64,
    d_vocab=50,
    act_fn="silu",
    normalization_type="RMS",
    positional_embedding_type="rotary",
    default_prepend_bos=False,
    seed=0,
    device="cpu",
)

FIXTURES: dict[str, dict] = {
    # GPT-NeoX / Llama layout, every dim rotates.
    "half_full": dict(n_heads=4, d_head=8, rotary_dim=8, rotary_base=100),
    # GPT-J layout, half the dims rotate (pass-through NoPE dims after them).
    "interleaved_partial": dict(
        n_heads=2, d_head=16, rotary_dim=8, rotary_adjacent_pairs=True, rotary_base=1000
    ),
    # Grouped-query attention: 4 query heads share 2 KV heads.
    "gqa": dict(n_heads=4, d_head=8, rotary_dim=8, n_key_value_heads=2, rotary_base=500),
    # Llama 3.1 frequency scaling.
    "ntk_by_parts": dict(
        n_heads=2,
        d_head=16,
        rotary_dim=16,
        rotary_base=10000,
        use_NTK_by_parts_rope=True,
        NTK_by_parts_factor=8.0,
        NTK_by_parts_low_freq_factor=1.0,
        NTK_by_parts_high_freq_factor=4.0,
        NTK_original_ctx_len=64,
    ),
}


# Variants with something between hook_q/hook_k and the rotation, or after the scores; kept
# out of FIXTURES (where hook_q is what gets rotated) and tested in tests/test_backends.py.
VARIANTS: dict[str, dict] = {
    # Qwen3 / Gemma-3: per-head RMS norm of q and k before RoPE, with GQA.
    "qk_norm": dict(
        n_heads=4, d_head=8, rotary_dim=8, n_key_value_heads=2, rotary_base=500, use_qk_norm=True
    ),
    # OLMo-2: RMS norm over the whole q/k projection (all heads at once) before RoPE.
    "olmo2_norm": dict(
        n_heads=4, d_head=8, rotary_dim=8, rotary_base=500, original_architecture="Olmo2ForCausalLM"
    ),
    # OLMo-1 style clamp of q/k/v before RoPE, partial rotary.
    "clip_qkv": dict(n_heads=2, d_head=16, rotary_dim=8, rotary_base=1000, clip_qkv=0.3),
    # Gemma-2: tanh soft-cap of the attention logits (a small cap so that it bites).
    "soft_cap": dict(
        n_heads=2, d_head=16, rotary_dim=16, rotary_base=100, attn_scores_soft_cap=2.0
    ),
}


def make_config(name: str, **overrides) -> Any:
    """The `HookedTransformerConfig` of a tiny model (TransformerLens 3.x only)."""
    if HookedTransformerConfig is None:
        raise ImportError("make_config builds a HookedTransformerConfig (TransformerLens < 4).")
    fields = {**_BASE, **{**FIXTURES, **VARIANTS}[name], **overrides}
    return HookedTransformerConfig(**fields)


def make_model(name: str, seed: int = 0, **overrides) -> Any:
    """A fresh tiny model with deterministic weights; q/k biases made non-zero so that offset
    features exist. A `TransformerBridge` under TransformerLens 4 (FIXTURES names only)."""
    if HookedTransformer is None:
        if overrides or name not in _BRIDGE_FIXTURES:
            raise ImportError(
                f"make_model({name!r}, **{overrides}) builds a HookedTransformer "
                "(TransformerLens < 4); under TransformerLens 4 only the FIXTURES names, "
                "unchanged, have bridge twins."
            )
        return _make_bridge(name, seed)
    torch.manual_seed(seed)
    model = HookedTransformer(make_config(name, **overrides))
    with torch.no_grad():
        for block in model.blocks:
            for param in (block.attn.b_Q, getattr(block.attn, "_b_K", None), block.attn.b_K):
                if isinstance(param, torch.nn.Parameter):
                    param.normal_(0, 0.5)
    model.eval()
    return model


def random_tokens(model: Any, batch: int = 2, pos: int = 12, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (batch, pos), generator=generator)


# The FIXTURES as transformers configs (class, fields) with the same heads, d_head, rotary
# dims, layout and frequencies. GPT-J is the interleaved, partial-rotary family (its base is
# transformers' fixed 10 000).
# Llama 3.1's NTK-by-parts scaling, on a 64-token original context (the bridge twin of the
# "ntk_by_parts" fixture, and the family check's Llama 3.1 row).
LLAMA3_SCALING = dict(
    rope_type="llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=64,
)
# YaRN on the same 64-token original context (TransformerLens 3.x cannot convert it).
YARN_SCALING = dict(
    rope_type="yarn", factor=4.0, rope_theta=10000.0, original_max_position_embeddings=64
)
_BRIDGE_FIXTURES: dict[str, tuple[str, dict]] = {
    "half_full": ("Llama", dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=100.0)),
    "interleaved_partial": ("GPTJ", dict(n_embd=32, n_head=2, rotary_dim=8)),
    "gqa": ("Llama", dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=500.0)),
    "ntk_by_parts": (
        "Llama",
        dict(
            num_attention_heads=2,
            num_key_value_heads=2,
            rope_parameters=dict(LLAMA3_SCALING, rope_theta=10000.0),
        ),
    ),
}
_LLAMA_BASE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=128,
    vocab_size=50,
    max_position_embeddings=64,
    attention_bias=True,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)
_GPTJ_BASE = dict(n_layer=2, vocab_size=50, n_positions=64, bos_token_id=1, eos_token_id=2)


def _make_bridge(name: str, seed: int) -> Any:
    from rope_interp.loading.hf_loading import boot

    hf_model = tiny_hf_model(name, seed)
    return boot(hf_model, word_tokenizer(), "cpu", torch.float32, default_prepend_bos=False)


def tiny_hf_model(name: str, seed: int = 0) -> Any:
    """The transformers model behind the bridge twin of the fixture `name` (eval mode)."""
    import transformers

    from rope_interp.loading.hf_loading import quiet

    family, fields = _BRIDGE_FIXTURES[name]
    base = _LLAMA_BASE if family == "Llama" else _GPTJ_BASE
    config = getattr(transformers, f"{family}Config")(**{**base, **fields})
    torch.manual_seed(seed)
    with quiet():
        hf_model = getattr(transformers, f"{family}ForCausalLM")(config).eval()
    with torch.no_grad():  # non-zero q/k biases (GPT-J has none), as in the HookedTransformers
        for module in hf_model.modules():
            for proj in ("q_proj", "k_proj"):
                bias = getattr(getattr(module, proj, None), "bias", None)
                if isinstance(bias, torch.nn.Parameter):
                    bias.normal_(0, 0.5)
    return hf_model


def word_tokenizer() -> Any:
    """A 50-id word-level tokenizer (the tiny models' vocabulary), built offline. Loaded from a
    folder, since TransformerLens 4 re-loads a bridge's tokenizer by its `name_or_path`."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(word_tokenizer_dir())


@functools.cache
def word_tokenizer_dir() -> str:
    """A folder (made once per process) holding the tiny models' word-level tokenizer."""
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 50)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )
    directory = tempfile.mkdtemp(prefix="rope-interp-word-tokenizer-")
    tokenizer.save_pretrained(directory)
    return directory
