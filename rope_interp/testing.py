"""Tiny random rotary `HookedTransformer`s (no downloads) covering the layouts rope-interp must
handle: half-split full rotary, interleaved partial rotary, grouped-query attention and
NTK-by-parts frequencies. rope-interp's own tests run every feature on all of them; use them to
try an analysis in seconds before running it on a real model."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

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


def make_config(name: str, **overrides) -> HookedTransformerConfig:
    fields = {**_BASE, **{**FIXTURES, **VARIANTS}[name], **overrides}
    return HookedTransformerConfig(**fields)


def make_model(name: str, seed: int = 0, **overrides) -> HookedTransformer:
    """A fresh tiny model with deterministic weights; q/k biases made non-zero so that offset
    features exist."""
    torch.manual_seed(seed)
    model = HookedTransformer(make_config(name, **overrides))
    with torch.no_grad():
        for block in model.blocks:
            for param in (block.attn.b_Q, getattr(block.attn, "_b_K", None), block.attn.b_K):
                if isinstance(param, torch.nn.Parameter):
                    param.normal_(0, 0.5)
    model.eval()
    return model


def random_tokens(model: HookedTransformer, batch: int = 2, pos: int = 12, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (batch, pos), generator=generator)
