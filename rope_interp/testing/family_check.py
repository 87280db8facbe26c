"""Tiny random Hugging Face models of every rotary family rope-interp supports, and the
measurements that prove it exact on each (used by tests/test_families.py and by
benchmarks/models_matrix.py, which writes docs/models.md from the same numbers).

For each family a 2-layer, d_model-64 model is built from its transformers config class,
saved with `save_pretrained`, loaded back with `load_model(path)` and compared
with the Hugging Face model itself:

- `logits`: max |logit difference| (float32);
- `theta`: max relative difference of the spec's θ_i from the HF rotary module's `inv_freq`
  (after scaling), per layer type;
- `decomposition`: max |softcap(Σ pairs + pass-through) − host scores| / max |scores|, where
  the host scores are `hook_attn_scores` (on TransformerLens 4.3 bridges that fire the pattern
  there, the hook that carries the scores; NaN where none does, see `host_scores`);
- `hf_logits`: the same decomposition against the HF model's own attention (float64, eager):
  log-softmax is the logit up to a per-query constant, so both are centred per query row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rope_interp.testing import LLAMA3_SCALING

# The fields of every tiny transformers config here (and of tests/bridge's, with overrides).
TINY_CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=384,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
_NOT_NEOX = ("num_key_value_heads", "pad_token_id")
# Phi-3's LongRoPE on the same 64-token original context (short factors 1, long factors 2, for
# the tiny models' 8 frequencies); Phi-3's config also wants the top-level
# original_max_position_embeddings.
LONGROPE_SCALING = dict(
    rope_type="longrope",
    rope_theta=10000.0,
    short_factor=[1.0] * 8,
    long_factor=[2.0] * 8,
    original_max_position_embeddings=64,
)


def tiny_config(config_class: str, **overrides) -> Any:
    """A tiny transformers config of `config_class` (e.g. "LlamaConfig"): `TINY_CONFIG` with
    `overrides`."""
    import transformers

    return getattr(transformers, config_class)(**{**TINY_CONFIG, **overrides})


@dataclass(frozen=True)
class Family:
    """One row of the supported-models matrix: how to build a tiny model, and its traits."""

    name: str
    config: Callable[[], Any]
    layout: str
    partial_rotary: str = "no"
    gqa: str = "yes"
    scaling: str = "none"
    qk_norm: str = "no"
    soft_cap: str = "no"
    local_global: str = "global"
    notes: str = ""
    traits: dict = field(default_factory=dict)


def _families() -> list[Family]:
    import transformers as tf

    # GPT-NeoX: no grouped-query attention, no pad token.
    neox: dict[str, Any] = {k: v for k, v in TINY_CONFIG.items() if k not in _NOT_NEOX}
    return [
        Family("Llama", lambda: tiny_config("LlamaConfig"), "half"),
        Family(
            "Llama-3.x (llama3 scaling)",
            lambda: tiny_config(
                "LlamaConfig", rope_scaling=dict(LLAMA3_SCALING), rope_theta=500000.0
            ),
            "half",
            scaling="llama3 (NTK-by-parts)",
        ),
        Family(
            "Llama (linear scaling)",
            lambda: tiny_config("LlamaConfig", rope_scaling=dict(rope_type="linear", factor=4.0)),
            "half",
            scaling="linear",
        ),
        Family("Qwen2 / Qwen2.5", lambda: tiny_config("Qwen2Config"), "half", notes="q/k biases"),
        Family(
            "Qwen3",
            lambda: tiny_config("Qwen3Config", head_dim=16),
            "half",
            qk_norm="per head (derived)",
        ),
        Family(
            "Mistral",
            lambda: tiny_config("MistralConfig", sliding_window=None),
            "half",
        ),
        Family(
            "Gemma-2",
            lambda: tiny_config(
                "Gemma2Config",
                head_dim=16,
                query_pre_attn_scalar=32,
                sliding_window=4,
                attn_logit_softcapping=5.0,
                final_logit_softcapping=30.0,
            ),
            "half",
            soft_cap="tanh 5.0 (pre-cap logit decomposed)",
            local_global="alternating",
        ),
        Family(
            "Gemma-3",
            lambda: tiny_config(
                "Gemma3TextConfig",
                head_dim=16,
                query_pre_attn_scalar=16,
                sliding_window=4,
                layer_types=["sliding_attention", "full_attention"],
                rope_parameters=dict(
                    sliding_attention=dict(rope_type="default", rope_theta=10000.0),
                    full_attention=dict(rope_type="linear", factor=8.0, rope_theta=1000000.0),
                ),
            ),
            "half",
            scaling="linear (global layers)",
            qk_norm="per head (derived)",
            local_global="local base 1e4 / global 1e6",
        ),
        Family("Phi-3", lambda: tiny_config("Phi3Config"), "half", notes="fused qkv"),
        Family(
            "OLMo-2",
            lambda: tiny_config("Olmo2Config", num_key_value_heads=4),
            "half",
            gqa="no",
            qk_norm="whole projection (derived)",
        ),
        Family(
            "Pythia / GPT-NeoX",
            lambda: tf.GPTNeoXConfig(**{**neox, "rotary_pct": 0.25}),
            "half",
            partial_rotary="25 %",
            gqa="no",
        ),
        Family(
            "GPT-J",
            lambda: tf.GPTJConfig(
                n_embd=64,
                n_layer=2,
                n_head=4,
                rotary_dim=8,
                vocab_size=384,
                n_positions=256,
                bos_token_id=1,
                eos_token_id=2,
            ),
            "interleaved",
            partial_rotary="8 of 16 dims",
            gqa="no",
        ),
    ]


FAMILIES: list[Family] = []


def families() -> list[Family]:
    if not FAMILIES:
        FAMILIES.extend(_families())
    return FAMILIES


def build_checkpoint(family: Family, directory: Path, seed: int = 0) -> Path:
    """Save a tiny random model of `family` to `directory` (config.json + safetensors)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family.config(), attn_implementation="eager")
    with torch.no_grad():  # make q/k biases and norm weights non-trivial
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.bias", "k_proj.bias")) or "norm" in name:
                param.add_(torch.randn_like(param) * 0.3)
    model.save_pretrained(str(directory))
    tiny_tokenizer(int(model.config.vocab_size)).save_pretrained(str(directory))
    return directory


def edited_checkpoint(directory: Path, target: Path, **changes) -> Path:
    """A copy of the checkpoint `directory` at `target` (files linked, not copied) whose
    config.json has `changes` applied: a variant to test a refusal or an option."""
    import json

    target.mkdir()
    for item in directory.iterdir():
        (target / item.name).symlink_to(item)
    (target / "config.json").unlink()
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def tiny_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer of `vocab_size` tokens trained on a few lines of the embedded
    pydoc corpus, so that checkpoints carry a tokenizer like real ones do."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = list(topics.values())[:20]
    tokenizer.train_from_iterator(text, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def measure(path: Path, tokens: torch.Tensor) -> dict[str, float]:
    """Every number of the module docstring for the checkpoint at `path`."""
    from transformer_lens.utilities.activation_functions import apply_softcap
    from transformers import AutoModelForCausalLM

    from rope_interp.core.backends import backend_for
    from rope_interp.core.capturing import capture
    from rope_interp.core.pairs import score_contributions
    from rope_interp.core.spec import RotarySpec
    from rope_interp.loading.hf_loading import hf_frequencies
    from rope_interp.loading.models import load_model

    model = load_model(str(path), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager").eval()
    with torch.no_grad():
        ours, cache = model.run_with_cache(tokens)
        theirs = hf(tokens).logits
    out: dict[str, Any] = {"logits": (ours - theirs).abs().max().item()}

    spec = RotarySpec.from_model(model)
    freqs = hf_frequencies(hf)
    layer_types = getattr(hf.config.get_text_config(), "layer_types", None)
    theta_err = 0.0
    for layer in range(spec.n_layers):
        key = "all" if "all" in freqs or layer_types is None else layer_types[layer]
        ref = freqs[key]
        theta_err = max(theta_err, ((spec.thetas[layer] - ref).abs() / ref).max().item())
    out["theta"] = theta_err

    got = capture(model, tokens, kinds=("q", "k"))
    cap = backend_for(model).soft_cap() or -1.0
    hf64 = hf.double()
    with torch.no_grad():
        attn = hf64(tokens, output_attentions=True).attentions
    n = tokens.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    dec, hf_err = 0.0, 0.0
    for layer in range(spec.n_layers):
        parts, passed = score_contributions(
            got.q(layer), got.k(layer), spec, layer, dtype=torch.float64
        )
        logit = apply_softcap(parts.sum(-1) + passed, cap)
        host = host_scores(cache, layer, causal)
        if host is None:
            dec = float("nan")
        else:
            # (a sliding window masks some causal entries with the dtype's lowest value)
            shown = causal & (host > torch.finfo(torch.float32).min / 2)
            rel = (logit - host)[shown].abs().max() / host[shown].abs().max()
            dec = max(dec, rel.item())
        probs = attn[layer]
        valid = probs > 0  # inside the causal (and sliding-window) mask
        log_p = torch.where(valid, probs.log(), torch.zeros_like(probs))
        diff = (_centred(log_p, valid) - _centred(logit, valid))[valid]
        hf_err = max(hf_err, (diff.abs().max() / logit[valid].abs().max()).item())
    out["decomposition"] = dec
    out["hf_logits"] = hf_err
    out["layout"] = spec.layout
    out["rotary_dim"] = spec.rotary_dim
    out["d_head"] = spec.d_head
    out["n_heads"] = spec.n_heads
    out["n_kv_heads"] = spec.n_kv_heads
    return out


def host_scores(cache: Any, layer: int, causal: torch.Tensor) -> torch.Tensor | None:
    """The host's own pre-softmax scores of `layer`, float64: `hook_attn_scores`, except where
    TransformerLens 4.3 bridges fire the softmaxed pattern there (GPT-J, GPT-NeoX) or swap it
    with `hook_pattern` (Gemma 2). None when no hook carries the scores."""
    for name in ("attn_scores", "pattern"):
        tensor = cache[f"blocks.{layer}.attn.hook_{name}"].double()
        if not _is_pattern(tensor, causal):
            return tensor
    return None


def _is_pattern(tensor: torch.Tensor, causal: torch.Tensor) -> bool:
    """Whether `tensor` [batch, head, query, key] is a softmaxed attention pattern: rows of
    non-negative weights summing to 1."""
    rows = torch.where(causal, tensor, torch.zeros_like(tensor)).sum(-1)
    return bool((tensor >= 0).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-4))


def _centred(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x minus its mean over the valid keys of each query row."""
    total = torch.where(valid, x, torch.zeros_like(x)).sum(-1, keepdim=True)
    return x - total / valid.sum(-1, keepdim=True)
