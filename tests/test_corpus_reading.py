"""The one corpus reader (`rope_interp.loading.corpus_reader`) on every path: the library's
`load_corpus` and `stream_corpus`, and the commands `summary`, `report`, `ablate` and `stats`.
Each format is read as what it is (the same windows as the equivalent plain text), values that
are not text are counted, what is not text is refused with one line, and reading is bounded by
the windows wanted, not by the corpus or its line lengths."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import tracemalloc
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import rope_interp.loading.corpus_reader as reader_module
import rope_interp.loading.data as data
from rope_interp import cli
from rope_interp.errors import RopeInterpError
from rope_interp.loading.corpus_reader import READ_CHARS, CorpusReader, text_blocks, whitespace_cut
from rope_interp.loading.data import TokenStream, embedded_texts, load_corpus
from tests.helpers import make_model, small_word_tokenizer

DOCS = embedded_texts()[:20]
TEXT = "\n\n".join(DOCS)


@pytest.fixture(scope="module")
def word_tokenizer():
    words = sorted({w for text in DOCS for w in text.split()})
    vocab = {"<unk>": 0, "<bos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", unk_token="<unk>")


class CountingTokenizer:
    """A tokenizer that counts the characters it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner, self.chars, self.calls, self.largest = inner, 0, 0, 0
        self.bos_token_id = inner.bos_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        self.calls += 1
        self.chars += len(text)
        self.largest = max(self.largest, len(text))
        return self.inner.encode(text, add_special_tokens=add_special_tokens)


def model_of(tokenizer, n_ctx: int = 4096, bos: bool = False):
    """What `load_corpus` and `stream_corpus` read of a model: tokenizer, context, BOS."""
    return SimpleNamespace(
        tokenizer=tokenizer, cfg=SimpleNamespace(default_prepend_bos=bos, n_ctx=n_ctx)
    )


def jsonl(rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture()
def formats(tmp_path):
    """The same documents as plain text, JSONL, Parquet and compressed files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "docs.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "docs.jsonl").write_text(jsonl({"text": d, "id": i} for i, d in enumerate(DOCS)))
    pq.write_table(pa.table({"id": range(len(DOCS)), "text": DOCS}), tmp_path / "docs.parquet")
    (tmp_path / "docs.txt.gz").write_bytes(gzip.compress(TEXT.encode()))
    (tmp_path / "docs.jsonl.gz").write_bytes(gzip.compress((tmp_path / "docs.jsonl").read_bytes()))
    (tmp_path / "docs.txt.bz2").write_bytes(bz2.compress(TEXT.encode()))
    (tmp_path / "docs.ndjson.xz").write_bytes(lzma.compress((tmp_path / "docs.jsonl").read_bytes()))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, doc in enumerate(DOCS):
        (parts / f"{i:02d}.txt").write_text(doc)
    return tmp_path


FORMATS = ["docs.jsonl", "docs.parquet", "docs.txt.gz", "docs.jsonl.gz", "docs.txt.bz2",
           "docs.ndjson.xz", "bom.txt", "parts/*.txt"]  # fmt: skip


# ---- every format read as what it is --------------------------------------------------------
@pytest.mark.parametrize("name", FORMATS)
def test_every_format_gives_the_windows_of_the_plain_text(word_tokenizer, formats, name):
    reference = word_tokenizer.encode(TEXT, add_special_tokens=False)
    plain = [
        w.tolist() for w in TokenStream(str(formats / "docs.txt"), word_tokenizer, 32).windows()
    ]
    assert plain == [reference[i : i + 32] for i in range(0, len(reference) // 32 * 32, 32)]
    streamed = [w.tolist() for w in TokenStream(str(formats / name), word_tokenizer, 32).windows()]
    assert streamed == plain
    model = model_of(word_tokenizer)
    sampled = load_corpus(model, str(formats / name), seq_len=32, n_windows=5, seed=4)
    assert torch.equal(
        sampled.tokens, load_corpus(model, str(formats / "docs.txt"), 32, 5, 4).tokens
    )


def test_texts_for_reads_documents_not_raw_lines(formats):
    assert data.texts_for(str(formats / "docs.jsonl"))[1] == DOCS
    assert data.texts_for(str(formats / "docs.parquet"))[1] == DOCS
    assert data.texts_for(str(formats / "parts/*.txt"))[1] == DOCS
    assert data.texts_for(str(formats / "docs.txt.gz"))[1] == [TEXT]


def test_load_corpus_on_the_embedded_corpus_is_the_seeded_draw_from_all_of_it(word_tokenizer):
    """Pinned against the one-pass computation: tokenise every topic joined by blank lines, cut
    into windows, draw with `randperm(seed)`."""
    joined = "\n\n".join(t for t in embedded_texts() if t.strip())
    stream = torch.tensor(word_tokenizer.encode(joined, add_special_tokens=False))
    available = stream.numel() // 64
    picks = torch.randperm(available, generator=torch.Generator().manual_seed(7))[:12]
    expected = stream[: available * 64].view(available, 64)[picks]
    corpus = load_corpus(model_of(word_tokenizer), "pydoc", seq_len=64, n_windows=12, seed=7)
    assert torch.equal(corpus.tokens, expected)


def test_a_file_is_sampled_from_its_first_windows_only(word_tokenizer, tmp_path):
    """A corpus longer than the pool: the draw comes from its first 16 n windows."""
    text = " ".join(f"w{i}" for i in range(20_000))
    (tmp_path / "long.txt").write_text(text)
    vocab = {"<unk>": 0, "<bos>": 1, **{f"w{i}": i + 2 for i in range(20_000)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = CountingTokenizer(PreTrainedTokenizerFast(tokenizer_object=backend))
    corpus = load_corpus(model_of(tokenizer), str(tmp_path / "long.txt"), 16, 3, seed=1)
    pool = data.SAMPLE_POOL_FACTOR * 3
    picks = torch.randperm(pool, generator=torch.Generator().manual_seed(1))[:3]
    expected = (torch.arange(pool * 16) + 2).view(pool, 16)[picks]
    assert torch.equal(corpus.tokens, expected)
    assert tokenizer.chars < len(text) / 4  # the rest of the file was never tokenised


def test_huggingface_dataset_reads_its_column(word_tokenizer, tmp_path, formats):
    pytest.importorskip("datasets")
    folder = tmp_path / "dataset"
    folder.mkdir()
    rows = [{"body": d} for d in DOCS[:10]] + [{"body": None}] + [{"body": d} for d in DOCS[10:]]
    (folder / "train.jsonl").write_text(jsonl(rows))
    stream = TokenStream(f"hf:{folder}:body", word_tokenizer, 32)
    plain = TokenStream(str(formats / "docs.txt"), word_tokenizer, 32)
    assert [w.tolist() for w in stream.windows()] == [w.tolist() for w in plain.windows()]
    assert stream.note() == "skipped 1 row(s) whose 'body' is not text (1 null)"


# ---- values that are not text ----------------------------------------------------------------
def test_values_that_are_not_text_are_skipped_and_counted(word_tokenizer, tmp_path, formats):
    import pyarrow as pa
    import pyarrow.parquet as pq

    odd = [None, 3, 2.5, True, ["a", "list"], {"an": "object"}]
    # (among the first rows: reading stops once the windows wanted are filled, and the count
    # covers the rows read)
    rows = [{"text": v} for v in odd[:3]] + [{"text": DOCS[0]}] + [{"text": v} for v in odd[3:]]
    rows += [{"text": d} for d in DOCS[1:]]
    (tmp_path / "mixed.jsonl").write_text(jsonl(rows) + "\n   \n")
    pq.write_table(
        pa.table({"text": [None, *DOCS[:2], None, *DOCS[2:]]}), tmp_path / "mixed.parquet"
    )
    plain = load_corpus(model_of(word_tokenizer), str(formats / "docs.txt"), 32, 6)
    for name, note in (
        ("mixed.jsonl", "skipped 6 row(s) whose 'text' is not text (1 boolean, 1 list, 1 null, "
         "2 number, 1 object)"),
        ("mixed.parquet", "skipped 2 row(s) whose 'text' is not text (2 null)"),
    ):  # fmt: skip
        corpus = load_corpus(model_of(word_tokenizer), str(tmp_path / name), 32, 6)
        assert torch.equal(corpus.tokens, plain.tokens)
        assert corpus.note == note and corpus.describe().endswith(note)


def test_a_parquet_column_that_is_not_text_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2], "body": ["a", "b"]}), tmp_path / "n.parquet")
    with pytest.raises(RopeInterpError, match=r"holds int64 values, not text.*\['body'\]"):
        CorpusReader(str(tmp_path / "n.parquet")).check()


# ---- what is not text is refused, with one line --------------------------------------------------
def _zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", "some text")
    return path.read_bytes()


BAD_FILES = {
    "latin1.txt": (lambda p: "café au lait\n".encode("latin-1"),
                   "is not UTF-8 text: byte 0xe9 at offset 3 (line 1)"),
    "utf16.txt": (lambda p: "hello world".encode("utf-16"), "looks like UTF-16 text"),
    "image.txt": (lambda p: b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "looks like a PNG image"),
    "blob.bin": (lambda p: b"abc\x00\x01\x02" * 100, "looks like a binary file (it holds NUL"),
    "model.gguf": (lambda p: b"GGUF\x03\x00\x00\x00", "give it as --model, not as a corpus"),
    "texts.zip": (_zip, "looks like a zip archive, not text; unzip it"),
    "fake.parquet": (lambda p: b"just text\n", "is named .parquet but is not a Parquet file"),
    "table.txt": (lambda p: b"PAR1\x15\x04", "looks like a Parquet file, not text; name it"),
    "latin1.txt.gz": (lambda p: gzip.compress("naïve\n".encode("latin-1")),
                      "is not UTF-8 text: byte 0xef at offset 2"),
    "cut.txt.gz": (lambda p: gzip.compress(b"some text " * 1000)[:40],
                   "is gzip-compressed but cannot be decompressed"),
    "page.jsonl": (lambda p: b'{"text": "a"}\n{"text": \n', "page.jsonl:2 is not valid JSON"),
    "list.jsonl": (lambda p: b'["text"]\n', "list.jsonl:1 is a JSON list, not an object"),
    "other.jsonl": (lambda p: b'{"body": "x"}\n', "other.jsonl:1 has no column 'text'; its "
                    "columns are ['body']"),
    "empty.txt": (lambda p: b"", "are empty; give files with text"),
}  # fmt: skip


@pytest.fixture()
def tiny_cli(monkeypatch):
    """Commands on a tiny model with a word tokenizer of the documents' commonest words; the
    corpus every command loaded is recorded in the returned list."""
    from rope_interp.cli import loading

    model = make_model("gqa")
    model.tokenizer = small_word_tokenizer(DOCS, model.cfg.d_vocab)
    loaded: list = []
    load_corpus_of = loading.load_model_and_corpus

    def record(settings, device):
        result = load_corpus_of(settings, device)
        loaded.append(result[1])
        return result

    monkeypatch.setattr(loading, "load_model_from_settings", lambda settings, device: model)
    monkeypatch.setattr(loading, "load_model_and_corpus", record)
    return loaded


def _one_error_line(capsys, progress: bool = False) -> str:
    """The error line on stderr: the only line, or with `progress` the last, after progress."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or (progress and len(err) > 1), err
    assert err[-1].startswith("rope-interp: error: ") and "Traceback" not in "".join(err)
    return err[-1]


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_what_is_not_text_is_refused_before_any_work(tiny_cli, tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    make, message = BAD_FILES[name]
    Path(name).write_bytes(make(tmp_path / "made"))
    assert cli.main(["summary", "--corpus", name, "--tokens", "32", "--seq-len", "16"]) == 2
    assert message in _one_error_line(capsys)
    assert tiny_cli == []  # refused before the model and corpus were loaded


def test_a_bad_byte_deep_in_a_file_is_refused_with_where_it_is(tiny_cli, tmp_path, capsys):
    good = ("word " * 30_000 + "\n") * 3  # past the first bytes checked up front
    path = tmp_path / "late.txt"
    path.write_bytes(good.encode() + b"caf\xe9\n")
    argv = ["summary", "--corpus", str(path), "--tokens", "999999", "--seq-len", "16"]
    assert cli.main(argv) == 2
    assert f"byte 0xe9 at offset {len(good) + 3} (line 4)" in _one_error_line(capsys)
    with pytest.raises(RopeInterpError, match=f"offset {len(good) + 3} "):
        list(CorpusReader(str(path)).pieces())


@pytest.mark.parametrize(
    "setup, corpus, message",
    [
        (lambda d: (d / "sub").mkdir(), "sub", "is a directory; name the text files in it"),
        (lambda d: None, "nothing*.txt", "No file matches 'nothing*.txt'"),
        (lambda d: (d / "blank.txt").write_text(" \n\t\n  "), "blank.txt", "empty: no non-blank"),
        (lambda d: (d / "none.jsonl").write_text(jsonl([{"text": None}])), "none.jsonl",
         "empty: no non-blank text was found (skipped 1 row(s) whose 'text' is not text (1 null))"),
    ],
)  # fmt: skip
def test_careless_corpora_get_one_line(
    tiny_cli, tmp_path, monkeypatch, capsys, setup, corpus, message
):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    for command in (["summary"], ["stats", "--out", "s.csv"]):
        assert cli.main([*command, "--corpus", corpus, "--tokens", "32", "--seq-len", "16"]) == 2
        assert message in _one_error_line(capsys, progress=command[0] == "stats")


def test_a_jsonl_line_over_the_cap_is_refused(word_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "MAX_RECORD_BYTES", 1000)
    (tmp_path / "long.jsonl").write_text(jsonl([{"text": "a " * 100}, {"text": "b " * 1000}]))
    with pytest.raises(RopeInterpError, match=r"long.jsonl:2 is longer than .* split long"):
        list(CorpusReader(str(tmp_path / "long.jsonl")).pieces())


# ---- the commands ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["docs.jsonl", "docs.parquet", "docs.txt.gz"])
def test_commands_read_every_format_as_its_text(tiny_cli, formats, tmp_path, name, capsys):
    base = ["--tokens", "64", "--seq-len", "16", "--corpus"]
    for corpus in (str(formats / "docs.txt"), str(formats / name)):
        assert cli.main(["summary", *base, corpus]) == 0
        out = tmp_path / f"ablate-{Path(corpus).name}.csv"
        argv = ["ablate", "--out", str(out), "--sweep", "sanity", "--bootstrap", "10", "--quiet"]
        assert cli.main([*argv, "--no-attention", *base, corpus]) == 0
        html = tmp_path / f"report-{Path(corpus).name}.html"
        argv = ["report", "--out", str(html), "--sections", "geometry", "--quiet"]
        assert cli.main([*argv, *base, corpus]) == 0
        stats = tmp_path / f"stats-{Path(corpus).name}.csv"
        assert cli.main(["stats", "--out", str(stats), *base, corpus]) == 0
    plain, other = tiny_cli[:3], tiny_cli[3:]
    assert len(other) == 3
    for a, b in zip(plain, other, strict=True):
        assert torch.equal(a.tokens, b.tokens)
    tables = [pd.read_csv(tmp_path / f"stats-{n}.csv") for n in ("docs.txt", Path(name).name)]
    pd.testing.assert_frame_equal(*tables)


def test_commands_report_what_they_skipped(tiny_cli, tmp_path, capsys):
    rows = [{"text": None}, {"text": DOCS[0]}, {"text": 7}, *({"text": d} for d in DOCS[1:])]
    (tmp_path / "mixed.jsonl").write_text(jsonl(rows))
    base = ["--tokens", "64", "--seq-len", "16", "--corpus", str(tmp_path / "mixed.jsonl")]
    note = "skipped 2 row(s) whose 'text' is not text (1 null, 1 number)"
    assert cli.main(["summary", *base]) == 0
    assert note in capsys.readouterr().out
    assert cli.main(["stats", "--out", str(tmp_path / "s.csv"), *base]) == 0
    assert f"corpus: {note}" in capsys.readouterr().err


def test_stats_reads_its_text_column(tiny_cli, tmp_path, capsys):
    (tmp_path / "b.jsonl").write_text(jsonl({"body": d} for d in DOCS))
    argv = ["stats", "--out", str(tmp_path / "s.csv"), "--corpus", str(tmp_path / "b.jsonl"),
            "--tokens", "64", "--seq-len", "16"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "has no column 'text'; its columns are ['body']" in _one_error_line(capsys)
    assert cli.main([*argv, "--text-column", "body"]) == 0


# ---- memory: bounded by the windows wanted, whatever the line lengths --------------------------
@pytest.fixture(scope="module")
def one_line_file(tmp_path_factory):
    """About 6 MB of words and no newline."""
    path = tmp_path_factory.mktemp("flat") / "flat.txt"
    words = " ".join(TEXT.split())
    path.write_text(" ".join([words] * (6_000_000 // len(words) + 1)))
    return path


def test_streaming_a_long_line_reads_and_tokenises_only_the_budget(word_tokenizer, one_line_file):
    tokenizer = CountingTokenizer(word_tokenizer)
    stream = TokenStream(str(one_line_file), tokenizer, 32, max_tokens=64)
    tracemalloc.start()
    windows = list(stream.windows())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(windows) == 2
    assert tokenizer.chars <= data._MIN_BLOCK_CHARS and tokenizer.calls == 1
    assert stream.reader.chars_read <= READ_CHARS
    assert peak < 2_000_000  # bytes: the file is 6 MB on one line


def test_loading_a_long_line_reads_and_tokenises_a_bounded_pool(word_tokenizer, one_line_file):
    tokenizer = CountingTokenizer(word_tokenizer)
    tracemalloc.start()
    corpus = load_corpus(model_of(tokenizer), str(one_line_file), seq_len=32, n_windows=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert corpus.tokens.shape == (4, 32)
    words = " ".join(TEXT.split())
    chars_per_token = len(words) / len(word_tokenizer.encode(words, add_special_tokens=False))
    pool_chars = data.SAMPLE_POOL_FACTOR * 4 * 32 * chars_per_token  # the text of the pool
    assert tokenizer.chars <= pool_chars + data._MIN_BLOCK_CHARS
    assert peak < 2_000_000


def test_a_large_budget_is_tokenised_in_bounded_blocks(word_tokenizer, one_line_file, monkeypatch):
    monkeypatch.setattr(data, "_CHUNK_CHARS", 50_000)
    tokenizer = CountingTokenizer(word_tokenizer)
    stream = TokenStream(str(one_line_file), tokenizer, 64, max_tokens=64 * 2000)
    assert sum(1 for _ in stream.windows()) == 2000
    assert tokenizer.calls >= 4 and tokenizer.largest <= 50_000


def test_one_huge_jsonl_record_is_tokenised_only_as_far_as_needed(word_tokenizer, tmp_path):
    words = " ".join(TEXT.split())
    (tmp_path / "big.jsonl").write_text(jsonl([{"text": words * 40}]))  # one ~4 MB record
    tokenizer = CountingTokenizer(word_tokenizer)
    stream = TokenStream(str(tmp_path / "big.jsonl"), tokenizer, 32, max_tokens=96)
    assert len(list(stream.windows())) == 3
    assert tokenizer.chars <= data._MIN_BLOCK_CHARS


# ---- blocks cut at whitespace -----------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 7, 100, 5000])
def test_blocks_are_the_text_cut_at_whitespace(limit):
    docs = ["  lead", "a  b\n\nc", "x" * 250 + " y", "tail  \n"]
    pieces = [(d[i : i + 3], i == 0) for d in docs for i in range(0, len(d), 3)]
    blocks = list(text_blocks(pieces, lambda: limit))
    assert "".join(blocks) == "\n\n".join(docs)
    assert all(len(b) <= limit for b in blocks)
    for block, after in zip(blocks, blocks[1:], strict=False):
        at_whitespace = not block[-1].isspace() and after[0].isspace()  # before a whole run
        hard = len(block) == limit and not any(c.isspace() for c in block.lstrip())
        assert at_whitespace or hard, (block, after)


def test_whitespace_cut():
    assert whitespace_cut("abc def ghi", 9) == 7  # before the run at 7: "abc def| ghi"
    assert whitespace_cut("abc   def", 5) == 3  # at the start of the run
    assert whitespace_cut("abcdefgh", 3) == 3  # no whitespace: hard
    assert whitespace_cut("   abcdef", 5) == 5  # only leading whitespace: hard
    assert whitespace_cut("short", 10) == 5


def test_blockwise_tokens_equal_one_pass_for_the_built_in_tokenizer(monkeypatch):
    """Byte-level BPE splits words from whitespace runs, so cutting at the start of a run
    changes no token: small blocks give the one-pass tokens of the embedded corpus."""
    cached = sorted(Path("~/.cache/rope-interp").expanduser().glob("*/tokenizer"))
    if not cached:
        pytest.skip("the built-in model's tokenizer is not cached here")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cached[0]))
    joined = "\n\n".join(t for t in embedded_texts() if t.strip())
    reference = tokenizer.encode(joined, add_special_tokens=False)
    monkeypatch.setattr(data, "_CHUNK_CHARS", 20_000)
    stream = TokenStream("pydoc", tokenizer, 128)
    streamed = [t for w in stream.windows() for t in w.tolist()]
    assert streamed == reference[: len(streamed)] and len(reference) - len(streamed) < 128
