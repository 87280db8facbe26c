"""Corpora and model-config tests that need no real model: a word-level tokenizer built from
the `tokenizers` library stands in for a model's tokenizer."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from rope_interp.errors import RopeInterpError
from rope_interp.loading.data import embedded_texts, text_file_texts, texts_for, token_windows
from rope_interp.loading.models import _as_dtype, hooked_config_from_llama


@pytest.fixture(scope="module")
def word_tokenizer():
    words = sorted({w for text in embedded_texts()[:40] for w in text.split()})
    vocab = {"<unk>": 0, "<bos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", unk_token="<unk>")


def test_embedded_corpus_is_english_prose():
    texts = embedded_texts()
    assert len(texts) > 50
    assert sum(map(len, texts)) > 300_000
    assert "statement" in " ".join(texts)


def test_windows_are_deterministic_and_non_overlapping(word_tokenizer):
    texts = embedded_texts()[:40]
    first = token_windows(texts, word_tokenizer, seq_len=32, n_windows=8, seed=1)
    again = token_windows(texts, word_tokenizer, seq_len=32, n_windows=8, seed=1)
    other = token_windows(texts, word_tokenizer, seq_len=32, n_windows=8, seed=2)
    assert first.shape == (8, 32) and torch.equal(first, again) and not torch.equal(first, other)
    stream = word_tokenizer.encode("\n\n".join(texts), add_special_tokens=False)
    starts = [
        next(i for i in range(0, len(stream), 32) if stream[i : i + 32] == row.tolist())
        for row in first
    ]
    assert len(set(starts)) == 8  # distinct aligned chunks never overlap


def test_bos_is_prepended_when_asked(word_tokenizer):
    windows = token_windows(embedded_texts()[:40], word_tokenizer, 16, 4, prepend_bos=True)
    assert (windows[:, 0] == 1).all() and (windows[:, 1:] != 1).all()


def test_corpus_errors_say_what_to_do(word_tokenizer, tmp_path):
    with pytest.raises(RopeInterpError, match="empty"):
        token_windows(["", "  "], word_tokenizer, 8, 1)
    with pytest.raises(RopeInterpError, match="fewer than the 50 requested"):
        token_windows(["statement " * 100], word_tokenizer, 8, 50)
    with pytest.raises(RopeInterpError, match="longer than the model's context"):
        token_windows(["statement"], word_tokenizer, 128, 1, n_ctx=64)
    with pytest.raises(RopeInterpError, match="No file matches"):
        text_file_texts(str(tmp_path / "*.txt"))


def test_text_files_by_glob(tmp_path):
    (tmp_path / "a.txt").write_text("alpha beta")
    (tmp_path / "b.txt").write_text("gamma")
    name, texts = texts_for(str(tmp_path / "*.txt"))
    assert texts == ["alpha beta", "gamma"] and name.endswith("*.txt")


def test_llama_config_mapping_with_llama3_scaling():
    hf = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=256,
        vocab_size=100,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 128,
        },
    )
    cfg = hooked_config_from_llama(hf)
    assert cfg["n_key_value_heads"] == 2 and cfg["d_head"] == 16
    assert cfg["rotary_base"] == 500000.0 and cfg["use_NTK_by_parts_rope"]
    assert cfg["NTK_original_ctx_len"] == 128 and cfg["NTK_by_parts_factor"] == 8.0
    hf.model_type = "gpt2"
    with pytest.raises(RopeInterpError, match="Llama-family"):
        hooked_config_from_llama(hf)


def test_dtype_names():
    assert _as_dtype("bfloat16") is torch.bfloat16
    assert _as_dtype("torch.float64") is torch.float64
    with pytest.raises(RopeInterpError, match="Unknown dtype"):
        _as_dtype("float7")
