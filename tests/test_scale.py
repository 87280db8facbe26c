"""Corpora of any size (streamed token windows, budgets, shards), the statistics file's
fingerprint, merging stats files, and the torch.distributed statistics run."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import rope_interp.data as data
from rope_interp.data import TokenStream, embedded_texts, parse_shard, parse_token_count
from rope_interp.errors import RopeInterpError

DOCS = embedded_texts()[:30]


@pytest.fixture(scope="module")
def word_tokenizer():
    words = sorted({w for text in DOCS for w in text.split()})
    vocab = {"<unk>": 0, "<bos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", unk_token="<unk>")


@pytest.fixture()
def corpus_files(tmp_path):
    """The same documents as a text file, a JSONL file and a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "docs.txt").write_text("\n\n".join(DOCS))
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "docs.parquet", row_group_size=7)
    return tmp_path


def _reference(tokenizer):
    return tokenizer.encode("\n\n".join(DOCS), add_special_tokens=False)


def _windows(stream: TokenStream) -> list[list[int]]:
    return [w.tolist() for w in stream.windows()]


@pytest.mark.parametrize("text", ["100M", "1e6", "50k", "2048", " 3 k", "1.5M"])
def test_token_counts_parse(text):
    expected = {"100M": 10**8, "1e6": 10**6, "50k": 50_000, "2048": 2048}
    expected |= {" 3 k": 3000, "1.5M": 1_500_000}
    assert parse_token_count(text) == expected[text]


@pytest.mark.parametrize("text", ["0", "-5", "1.5", "abc", "", "9**9**9", "1e-3", "nan", "2k5"])
def test_bad_token_counts_are_refused(text):
    with pytest.raises(RopeInterpError, match="--tokens"):
        parse_token_count(text)


@pytest.mark.parametrize("text", ["3/2", "1", "a/b", "-1/2", "0/0"])
def test_bad_shards_are_refused(text):
    with pytest.raises(RopeInterpError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize("name", ["docs.txt", "docs.jsonl", "docs.parquet"])
def test_streamed_windows_are_the_token_stream_cut_in_order(
    word_tokenizer, corpus_files, name, monkeypatch
):
    monkeypatch.setattr(data, "_CHUNK_CHARS", 500)  # many chunks: tokenised piece by piece
    reference = _reference(word_tokenizer)
    stream = TokenStream(str(corpus_files / name), word_tokenizer, seq_len=32)
    windows = _windows(stream)
    assert len(windows) == len(reference) // 32
    assert windows == [reference[i * 32 : (i + 1) * 32] for i in range(len(windows))]


def test_budget_bos_and_batches(word_tokenizer, corpus_files):
    reference = _reference(word_tokenizer)
    stream = TokenStream(
        str(corpus_files / "docs.jsonl"), word_tokenizer, 16, prepend_bos=True, max_tokens=1000
    )
    batches = list(stream.batches(7))
    tokens = torch.cat(batches)
    assert tokens.shape == (1000 // 16, 16) and [len(b) for b in batches][-1] == 62 % 7
    assert (tokens[:, 0] == 1).all()
    assert tokens[:, 1:].reshape(-1).tolist() == reference[: 62 * 15]


def test_shards_are_disjoint_and_their_union_is_the_whole_run(word_tokenizer, corpus_files):
    source = str(corpus_files / "docs.parquet")
    whole = _windows(TokenStream(source, word_tokenizer, 32, max_tokens=32 * 50))
    shards = [
        _windows(TokenStream(source, word_tokenizer, 32, max_tokens=32 * 50, shard=(i, 3)))
        for i in range(3)
    ]
    assert [len(s) for s in shards] == [17, 17, 16]
    for i, shard in enumerate(shards):
        assert shard == whole[i::3]
    assert (
        TokenStream(source, word_tokenizer, 32, max_tokens=32 * 50, shard="1/3").shard_windows()
        == 17
    )


def test_stream_errors_name_the_problem(word_tokenizer, corpus_files, tmp_path):
    with pytest.raises(RopeInterpError, match="No file matches"):
        TokenStream(str(tmp_path / "missing*.txt"), word_tokenizer, 16)
    with pytest.raises(RopeInterpError, match="directory"):
        TokenStream(str(tmp_path), word_tokenizer, 16)
    with pytest.raises(RopeInterpError, match="less than one window"):
        TokenStream("pydoc", word_tokenizer, 16, max_tokens=8)
    with pytest.raises(RopeInterpError, match="no column 'body'"):
        _windows(TokenStream(str(corpus_files / "docs.jsonl"), word_tokenizer, 16, column="body"))
    with pytest.raises(RopeInterpError, match="no column 'body'"):
        _windows(TokenStream(str(corpus_files / "docs.parquet"), word_tokenizer, 16, column="body"))
