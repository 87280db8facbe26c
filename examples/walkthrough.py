# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # From your own model to rotary pairs, a statistic and an ablation
#
# A notebook stored as a jupytext "percent" script: open it in Jupyter with jupytext
# installed, or convert it (`jupytext --to notebook examples/walkthrough.py`), or simply run
# it (`python examples/walkthrough.py`). It uses a small random rotary model so that it runs in
# seconds anywhere, on either TransformerLens: a `TransformerBridge` under TransformerLens 4, a
# `HookedTransformer` under 3.x. Replace `model` with your own (e.g.
# `TransformerBridge.boot_transformers(...)`, `HookedTransformer.from_pretrained(...)` or
# `ri.load_model("smollm2-135m")`) and every cell works unchanged.

# %%
import torch

import rope_interp as ri

torch.manual_seed(0)
try:  # TransformerLens 3.x
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=64, n_heads=4, n_key_value_heads=2, d_head=16, n_ctx=64,
        d_vocab=100, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=16, rotary_base=10_000, gated_mlp=True,
    )  # fmt: skip
    model = HookedTransformer(cfg).eval()  # <- your model here
except ImportError:  # TransformerLens 4: the same shape as a bridge around a transformers model
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM

    from rope_interp.testing import word_tokenizer  # a tiny offline tokenizer

    hf_config = LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=128, vocab_size=100, max_position_embeddings=64,
    )  # fmt: skip
    model = TransformerBridge.boot_transformers(  # <- your model here
        "LlamaForCausalLM", hf_model=LlamaForCausalLM(hf_config).eval(), tokenizer=word_tokenizer()
    ).eval()
tokens = torch.randint(0, model.cfg.d_vocab, (8, 32))

# %% [markdown]
# ## 1. The rotary geometry rope-interp reads from the model
# `RotarySpec` reads θ_i for every layer from the model's own cos/sin buffers (the rotation it
# really applies) and cross-checks them against the config's formula.

# %%
spec = ri.RotarySpec.from_model(model)
print(spec.summary())

# %% [markdown]
# ## 2. The exact per-pair share of every attention score
# Capture pre-rotation q/k at one layer, split them into pairs, and check the decomposition
# against TransformerLens's own `hook_attn_scores`.

# %%
layer = 1
captured = ri.capture(model, tokens[:2], layers=[layer])
per_pair, pass_through = ri.score_contributions(captured.q(layer), captured.k(layer), spec, layer)
_, cache = model.run_with_cache(tokens[:2], names_filter=f"blocks.{layer}.attn.hook_attn_scores")
scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]
causal = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
error = (per_pair.sum(-1) + pass_through - scores)[..., causal].abs().max().item()
print(f"per_pair {tuple(per_pair.shape)}; max |Σ pairs + pass-through − scores| = {error:.2e}")
assert error < 1e-4

# %% [markdown]
# ## 3. A streaming statistic over a corpus
# `collect_pair_stats` runs the model over batches and keeps running sums only: memory does not
# grow with the number of tokens. `to_frame()` gives a tidy table, one row per layer/head/pair.

# %%
stats = ri.collect_pair_stats(model, tokens.split(4), progress=False)
usage = stats.to_frame()  # columns: kind (q/k), layer, head, pair, mean_norm, concentration, ...
print(usage.groupby(["kind", "pair"])["mean_norm"].mean().unstack("kind").round(3).to_string())

# %% [markdown]
# ## 4. An ablation with a control
# Zero the 2 highest-frequency pairs in q and k of every head, against 2 random pairs, and
# measure Δloss (nats/token) with a bootstrap confidence interval over sequences.

# %%
high = ri.select_band(spec, "high", k=2)
random_pairs = ri.select_random(spec, like=high, seed=0)
conditions = [
    ri.Condition("high 2", ri.Intervention(model, high, mode="zero")),
    ri.Condition("random 2", ri.Intervention(model, random_pairs, mode="zero")),
]
result = ri.run_experiment(
    model, conditions, tokens, settings=ri.RunSettings(batch_size=4, n_boot=200, progress=False)
)
print(result.summary[["condition", "delta_loss", "ci_low", "ci_high"]].to_string())
