"""Corpora of any size (streamed token windows, budgets, shards), the statistics file's
fingerprint, merging stats files, and the torch.distributed statistics run."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import rope_interp.loading.data as data
from rope_interp.errors import RopeInterpError
from rope_interp.loading.data import TokenStream, embedded_texts, parse_shard
from rope_interp.utils.numbers import parse_token_count

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


# ---- the statistics file's fingerprint ----------------------------------------------------------
from rope_interp.core.spec import RotarySpec  # noqa: E402
from rope_interp.core.stats import PairStats, collect_pair_stats, merge_stats_files  # noqa: E402
from tests.helpers import make_model, random_tokens, small_word_tokenizer  # noqa: E402


def _saved_stats(tmp_path, name="gqa", file="stats.safetensors", seed=0, **overrides):
    model = make_model(name, **overrides)
    batches = [random_tokens(model, batch=2, pos=8, seed=seed + i) for i in range(2)]
    stats = collect_pair_stats(model, batches, progress=False)
    stats.save(tmp_path / file)
    return model, stats, tmp_path / file


def test_load_refuses_statistics_of_another_geometry(tmp_path):
    _, _, path = _saved_stats(tmp_path)
    with pytest.raises(
        RopeInterpError, match=r"n_heads 4 vs 2; d_head 8 vs 16; rotary_dim 8 vs 16"
    ):
        PairStats.load(path, RotarySpec.from_model(make_model("ntk_by_parts")))
    with pytest.raises(RopeInterpError, match="θ"):
        PairStats.load(path, RotarySpec.from_model(make_model("gqa", rotary_base=10000)))
    with pytest.raises(RopeInterpError, match="model"):
        PairStats.load(
            path, RotarySpec.from_model(make_model("gqa")), model=make_model("gqa", d_mlp=64)
        )


def test_files_without_metadata_or_not_safetensors_are_clear_errors(tmp_path):
    from safetensors.torch import save_file

    spec = RotarySpec.from_model(make_model("gqa"))
    save_file({"q.count": torch.zeros(2, 4, 4)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(RopeInterpError, match="lacks the metadata"):
        PairStats.load(tmp_path / "bare.safetensors", spec)
    (tmp_path / "text.safetensors").write_text("not a tensor file")
    with pytest.raises(RopeInterpError, match="not a readable statistics file"):
        PairStats.load(tmp_path / "text.safetensors", spec)
    with pytest.raises(RopeInterpError, match="No statistics file"):
        PairStats.load(tmp_path / "missing.safetensors", spec)


def test_merge_refuses_different_models(tmp_path):
    _, gqa, gqa_path = _saved_stats(tmp_path)
    _, full, full_path = _saved_stats(tmp_path, "half_full", "full.safetensors")
    with pytest.raises(RopeInterpError, match="n_kv_heads 4 vs 2"):
        gqa.merge(full)
    with pytest.raises(RopeInterpError, match="n_kv_heads"):
        merge_stats_files(tmp_path / "m.safetensors", [gqa_path, full_path])
    assert not (tmp_path / "m.safetensors").exists()


def test_float32_reduction_agrees_with_float64(tmp_path):
    model = make_model("interleaved_partial")
    batches = [random_tokens(model, batch=4, pos=32, seed=i) for i in range(3)]
    exact = collect_pair_stats(model, batches, progress=False)
    fast = collect_pair_stats(model, batches, progress=False, reduce_dtype=torch.float32)
    for kind in ("q", "k"):
        for name, value in exact.acc[kind].items():
            torch.testing.assert_close(fast.acc[kind][name], value, rtol=1e-5, atol=1e-5)


def test_a_lazy_iterator_is_pulled_one_batch_at_a_time():
    model = make_model("half_full")
    pulled = []

    def batches():
        for seed in range(3):
            pulled.append(seed)
            yield random_tokens(model, batch=1, pos=8, seed=seed)

    seen = []
    stats = PairStats(RotarySpec.from_model(model))
    original = stats.update

    def update(kind, layer, x):
        seen.append(len(pulled))
        original(kind, layer, x)

    stats.update = update
    collect_pair_stats(model, batches(), progress=False, stats=stats)
    assert seen[0] == 1 and seen[-1] == 3  # the first forward ran before the second pull


# ---- shards, merge and torch.distributed through the command line -------------------------------
@pytest.fixture(scope="module")
def small_vocab_tokenizer():
    """A word tokenizer with fewer ids than the tiny models' vocabulary (50)."""
    return small_word_tokenizer(DOCS, 50)


def _tiny_loader(tokenizer):
    def load(settings, device):
        model = make_model("gqa")
        model.tokenizer = tokenizer
        return model

    return load


def _stats_argv(corpus, out, *extra):
    return ["stats", "--corpus", str(corpus), "--out", str(out), "--seq-len", "16",
            "--tokens", "1600", "--batch-size", "3", "--quiet", *extra]  # fmt: skip


def _assert_same_stats(a_path, b_path):
    from safetensors.torch import load_file

    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert set(a) == set(b)
    for key in a:
        if key.endswith("max_norm"):
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12), key
    from rope_interp.core.stats import read_stats_file

    assert read_stats_file(a_path)[1]["tokens_seen"] == read_stats_file(b_path)[1]["tokens_seen"]


def test_merge_of_shard_files_equals_the_unsharded_file(
    small_vocab_tokenizer, corpus_files, monkeypatch, tmp_path, capsys
):
    from rope_interp import cli
    from rope_interp.cli import loading

    monkeypatch.setattr(loading, "load_model_from_settings", _tiny_loader(small_vocab_tokenizer))
    corpus = corpus_files / "docs.jsonl"
    whole, merged = tmp_path / "whole.safetensors", tmp_path / "merged.safetensors"
    assert cli.main(_stats_argv(corpus, whole)) == 0
    shards = [tmp_path / f"shard{i}.safetensors" for i in range(2)]
    for i, path in enumerate(shards):
        assert cli.main(_stats_argv(corpus, path, "--shard", f"{i}/2")) == 0
    assert cli.main(["merge", str(merged), *map(str, shards)]) == 0
    assert "1600 tokens from 2 files" in capsys.readouterr().out
    _assert_same_stats(merged, whole)
    again = tmp_path / "again.safetensors"  # --out, as every other command writes
    assert cli.main(["merge", *map(str, shards), "--out", str(again)]) == 0
    _assert_same_stats(again, whole)
    assert cli.main(_stats_argv(corpus, tmp_path / "x.safetensors", "--shard", "2/2")) == 2
    assert cli.main(_stats_argv(corpus, tmp_path / "x.safetensors", "--tokens", "0")) == 2
    assert cli.main(["merge", str(merged), str(shards[0])]) == 2


def _distributed_rank(rank, world, port, argv, tokenizer):
    import os

    from rope_interp import cli
    from rope_interp.cli import loading

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    loading.load_model_from_settings = _tiny_loader(tokenizer)
    assert cli.main(argv) == 0


def test_two_gloo_ranks_equal_one_process(small_vocab_tokenizer, corpus_files, monkeypatch,
                                          tmp_path):  # fmt: skip
    import socket

    import torch.multiprocessing as mp

    from rope_interp import cli
    from rope_interp.cli import loading

    monkeypatch.setattr(loading, "load_model_from_settings", _tiny_loader(small_vocab_tokenizer))
    corpus = corpus_files / "docs.txt"
    single = tmp_path / "single.safetensors"
    assert cli.main(_stats_argv(corpus, single)) == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    distributed = tmp_path / "distributed.safetensors"
    argv = _stats_argv(corpus, distributed)
    mp.spawn(_distributed_rank, args=(2, port, argv, small_vocab_tokenizer), nprocs=2)
    _assert_same_stats(distributed, single)


# ---- ablate under torch.distributed: the ranks split the windows, rank 0 merges --------------
def _random_windows(settings, device):
    from rope_interp.loading.data import Corpus

    model = make_model("gqa")
    n_windows = max(1, settings.tokens // settings.seq_len)
    tokens = random_tokens(model, batch=n_windows, pos=settings.seq_len, seed=settings.seed)
    return model, Corpus("random tokens", tokens, prepend_bos=False)


def _ablate_argv(out):
    """4 windows of 12 tokens, 2 conditions (p-RoPE p=0.5 and its reverse)."""
    return ["ablate", "--out", str(out), "--sweep", "p-rope", "--p", "0.5", "--tokens", "48",
            "--seq-len", "12", "--batch-size", "2", "--bootstrap", "50", "--quiet"]  # fmt: skip


def _ablate_rank(rank, world, port, argv):
    import os

    from rope_interp import cli
    from rope_interp.cli import loading

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    loading.load_model_and_corpus = _random_windows
    assert cli.main(argv) == 0


def test_ablate_on_two_gloo_ranks_equals_one_process(monkeypatch, tmp_path):
    import socket

    import pandas as pd
    import torch.multiprocessing as mp

    from rope_interp import cli
    from rope_interp.cli import loading
    from rope_interp.interventions.results import merge_results

    monkeypatch.setattr(loading, "load_model_and_corpus", _random_windows)
    single, distributed = tmp_path / "single.csv", tmp_path / "distributed.csv"
    assert cli.main(_ablate_argv(single)) == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_ablate_rank, args=(2, port, _ablate_argv(distributed)), nprocs=2)

    one, two = pd.read_csv(single), pd.read_csv(distributed)
    assert list(one.condition) == list(two.condition) and len(one) == 2
    assert (one.n_sequences == 4).all() and (two.n_sequences == 4).all()
    for column in ("delta_loss", "ci_low", "ci_high", "loss", "loss_base"):
        assert two[column].to_numpy() == pytest.approx(one[column].to_numpy(), abs=1e-12)
    heads_one = pd.read_csv(tmp_path / "single_heads.csv")
    heads_two = pd.read_csv(tmp_path / "distributed_heads.csv")
    pd.testing.assert_frame_equal(heads_two, heads_one, check_exact=False, rtol=1e-12)
    # each rank kept its own half of the windows; their merge has the one-process sequences
    runs = tmp_path / "distributed.runs"
    ranks = [runs / "rank-0-of-2", runs / "rank-1-of-2"]
    halves = [merge_results([r]).sequences for r in ranks]
    assert [len(h) for h in halves] == [4, 4]  # 2 windows × 2 conditions each
    merged = merge_results(ranks).sequences
    whole = merge_results([tmp_path / "single.runs"]).sequences
    assert list(merged.sequence_id) == list(whole.sequence_id)
    for column in ("loss", "loss_base", "delta_loss"):
        assert merged[column].to_numpy() == pytest.approx(whole[column].to_numpy(), abs=1e-12)
