"""Corpora → token windows `Int[Tensor, "batch pos"]`.

Every corpus is read by `rope_interp.loading.corpus_reader.CorpusReader` (the embedded default, the
English prose of Python's `pydoc_data.topics`, ~100k tokens, always offline; text, JSONL and
Parquet files, by paths or globs; a Hugging Face dataset, streamed) and tokenised block by
block (`text_blocks`), each block sized to the tokens still wanted, so that reading stops once
the windows a caller needs are filled. Two views of the same windows:

- `stream_corpus`/`TokenStream`: consecutive non-overlapping windows in corpus order, for a
  corpus of any size;
- `load_corpus`: `n_windows` of those windows drawn with a seeded permutation, held in memory.
  It draws from the first `SAMPLE_POOL_FACTOR × n_windows` windows of a file or dataset (from
  all of the embedded corpus), so memory is bounded by the request, not by the corpus.

BOS handling: the text is tokenized without special tokens into one stream (documents joined by
a blank line) and cut into windows. If `prepend_bos` (default: the model's
`cfg.default_prepend_bos`), each window is the tokenizer's BOS followed by `seq_len - 1` text
tokens; otherwise `seq_len` text tokens. The built-in SmolLM2 model does not use a BOS token,
so its windows start with a text token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel
from rope_interp.loading.corpus_reader import EMBEDDED_CORPUS as EMBEDDED_CORPUS
from rope_interp.loading.corpus_reader import CorpusReader, text_blocks
from rope_interp.loading.corpus_reader import embedded_texts as embedded_texts
from rope_interp.loading.corpus_reader import resolve_text_files as resolve_text_files

_CHUNK_CHARS = 1 << 20  # the most text tokenised per call
_MIN_BLOCK_CHARS = 1 << 12  # the least, when few tokens are still wanted
_CHARS_PER_TOKEN = 4  # to size a block to the tokens still wanted (more is read if short)
SAMPLE_POOL_FACTOR = 16  # load_corpus samples n windows from the first 16 n of a file


@dataclass(frozen=True)
class Corpus:
    """Token windows drawn from a named text source."""

    name: str
    tokens: Int[Tensor, "batch pos"]
    prepend_bos: bool
    note: str = ""  # what reading skipped, e.g. rows whose text field is null

    @property
    def n_tokens(self) -> int:
        return self.tokens.numel()

    def batches(self, batch_size: int) -> Iterator[Int[Tensor, "batch pos"]]:
        """The windows in order, `batch_size` at a time (the last batch may be smaller)."""
        if batch_size < 1:
            raise RopeInterpError(f"batch_size must be ≥ 1, got {batch_size}.")
        for start in range(0, self.tokens.shape[0], batch_size):
            yield self.tokens[start : start + batch_size]

    def describe(self) -> str:
        bos = "BOS + text" if self.prepend_bos else "text only, no BOS"
        n, length = self.tokens.shape
        note = f"; {self.note}" if self.note else ""
        return f"{self.name}: {n} windows × {length} tokens = {self.n_tokens} tokens ({bos}){note}"


def text_file_texts(patterns: str | Iterable[str], column: str = "text") -> list[str]:
    """The non-blank documents of files named by paths or glob patterns, whole, in memory."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return CorpusReader(",".join(map(str, patterns)), column).texts()


def texts_for(source: str, column: str = "text") -> tuple[str, list[str]]:
    """A corpus spec (`"pydoc"`, `"hf:NAME[:COLUMN]"` or comma-separated paths/globs) →
    (display name, its non-blank documents whole, in memory: for small corpora)."""
    reader = CorpusReader(source, column)
    return reader.name, reader.texts()


class _Windows:
    """Consecutive windows of `body` tokens of `pieces` (as `CorpusReader.pieces` yields them),
    at most `limit`: the text is tokenised block by block, each block sized to the tokens
    still wanted (at least `_MIN_BLOCK_CHARS`, at most `_CHUNK_CHARS` characters), so reading
    stops about where the windows are filled. `tokens` counts the tokens made so far."""

    def __init__(self, pieces: Iterable[tuple[str, bool]], tokenizer, body: int, limit=None):
        self.pieces, self.tokenizer, self.body, self.limit = pieces, tokenizer, body, limit
        self.tokens = 0

    def __iter__(self) -> Iterator[list[int]]:
        if self.limit is not None and self.limit < 1:
            return
        pending: list[int] = []
        made = 0

        def chars_wanted() -> int:
            if self.limit is None:
                return _CHUNK_CHARS
            wanted = (self.limit - made) * self.body - len(pending)
            return min(_CHUNK_CHARS, max(_MIN_BLOCK_CHARS, wanted * _CHARS_PER_TOKEN))

        for block in text_blocks(self.pieces, chars_wanted):
            tokens = self.tokenizer.encode(block, add_special_tokens=False)
            self.tokens += len(tokens)
            pending.extend(tokens)
            start = 0
            while len(pending) - start >= self.body:
                yield pending[start : start + self.body]
                made += 1
                start += self.body
                if self.limit is not None and made >= self.limit:
                    return
            del pending[:start]


def _check_window_shape(seq_len: int, n_ctx: int | None) -> None:
    if seq_len < 2:
        raise RopeInterpError(f"seq_len must be ≥ 2, got {seq_len}.")
    if n_ctx is not None and seq_len > n_ctx:
        raise RopeInterpError(
            f"seq_len {seq_len} is longer than the model's context ({n_ctx}); "
            f"use seq_len ≤ {n_ctx}."
        )


def _sample_windows(
    pieces: Iterable[tuple[str, bool]],
    tokenizer,
    seq_len: int,
    n_windows: int,
    seed: int,
    prepend_bos: bool,
    n_ctx: int | None,
    pool: int | None,
    skipped: Callable[[], str] = str,
) -> Int[Tensor, "batch pos"]:
    """`n_windows` of the first `pool` (None: all) consecutive windows, drawn with a seeded
    permutation; BOS first if `prepend_bos`. `skipped()` says what reading skipped."""
    _check_window_shape(seq_len, n_ctx)
    if n_windows < 1:
        raise RopeInterpError(f"n_windows must be ≥ 1, got {n_windows}.")
    if prepend_bos and tokenizer.bos_token_id is None:
        raise RopeInterpError("prepend_bos=True but the tokenizer has no BOS token.")
    body = seq_len - 1 if prepend_bos else seq_len
    cutter = _Windows(pieces, tokenizer, body, pool)
    windows = [torch.tensor(window, dtype=torch.long) for window in cutter]
    if cutter.tokens == 0:
        why = _why(skipped())
        raise RopeInterpError(f"The corpus is empty: no non-blank text was found{why}.")
    available = len(windows)
    if available < n_windows:
        raise RopeInterpError(
            f"The corpus has {cutter.tokens} tokens: {available} windows of {body} text tokens, "
            f"fewer than the {n_windows} requested. Ask for fewer or shorter windows, or add text."
        )
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(available, generator=generator)[:n_windows]
    chosen = torch.stack([windows[i] for i in picks.tolist()])
    if prepend_bos:
        bos = torch.full((n_windows, 1), tokenizer.bos_token_id, dtype=torch.long)
        chosen = torch.cat([bos, chosen], dim=1)
    return chosen


def _why(note: str) -> str:
    return f" ({note})" if note else ""


def token_windows(
    texts: Iterable[str],
    tokenizer,
    seq_len: int,
    n_windows: int,
    seed: int = 0,
    prepend_bos: bool = False,
    n_ctx: int | None = None,
) -> Int[Tensor, "batch pos"]:
    """Tokenize `texts` into one stream (joined by blank lines) and draw `n_windows`
    non-overlapping windows of `seq_len` tokens (deterministic under `seed`)."""
    pieces = ((text, True) for text in texts if text and text.strip())
    return _sample_windows(pieces, tokenizer, seq_len, n_windows, seed, prepend_bos, n_ctx, None)


def load_corpus(
    model: HostModel,
    source: str = EMBEDDED_CORPUS,
    seq_len: int = 256,
    n_windows: int = 16,
    seed: int = 0,
    prepend_bos: bool | None = None,
    column: str = "text",
) -> Corpus:
    """`n_windows` token windows for `model` (its tokenizer, context length and BOS default),
    drawn with a seeded permutation from the first `SAMPLE_POOL_FACTOR × n_windows` windows of
    the corpus (all of them for the embedded corpus).

    Args:
        source: `"pydoc"` (embedded), `"hf:NAME[:COLUMN]"`, or comma-separated paths/globs.
        column: the text field of .jsonl/.parquet files and datasets.
    """
    if model.tokenizer is None:
        raise RopeInterpError("The model has no tokenizer; pass token tensors directly instead.")
    if prepend_bos is None:
        prepend_bos = bool(model.cfg.default_prepend_bos)
    _check_window_shape(seq_len, model.cfg.n_ctx)
    reader = CorpusReader(source, column)
    pool = None if reader.embedded else SAMPLE_POOL_FACTOR * max(1, n_windows)
    tokens = _sample_windows(
        reader.pieces(),
        model.tokenizer,
        seq_len,
        n_windows,
        seed,
        prepend_bos,
        model.cfg.n_ctx,
        pool,
        reader.note,
    )
    return Corpus(name=reader.name, tokens=tokens, prepend_bos=prepend_bos, note=reader.note())


# ---- corpora of any size: streaming token windows ---------------------------------------------
def parse_shard(text: str | tuple[int, int], what: str = "--shard") -> tuple[int, int]:
    """`"i/N"` → `(i, N)` with 0 ≤ i < N."""
    if isinstance(text, tuple):
        index, count = text
    else:
        left, slash, right = str(text).partition("/")
        if not slash or not left.strip().isdigit() or not right.strip().isdigit():
            raise RopeInterpError(
                f"{what} takes i/N (e.g. 0/4: the first of 4 shards); got {text!r}."
            )
        index, count = int(left), int(right)
    if count < 1 or not 0 <= index < count:
        raise RopeInterpError(f"{what} i/N needs N ≥ 1 and 0 ≤ i < N; got {index}/{count}.")
    return index, count


@dataclass
class TokenStream:
    """Token windows streamed from a corpus of any size: texts are read lazily, tokenised
    at most ~1 MB at a time (less when the budget needs less), and cut into consecutive
    non-overlapping windows in corpus order (no shuffling); memory does not depend on the corpus
    size, and reading stops once the budget's windows are filled.

    `max_tokens` caps the windows of the whole (unsharded) run at `max_tokens // seq_len`;
    `shard=(i, N)` keeps windows i, i+N, i+2N, ...: the N shards are disjoint and together are
    the unsharded run. Documents are joined by a blank line, as in `token_windows`.
    """

    source: str
    tokenizer: Any
    seq_len: int
    prepend_bos: bool = False
    max_tokens: int | None = None
    shard: Any = (0, 1)  # "I/N" or (I, N); (I, N) after __post_init__
    column: str = "text"
    n_ctx: int | None = None
    reader: CorpusReader = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_window_shape(self.seq_len, self.n_ctx)
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise RopeInterpError(
                f"A budget of {self.max_tokens} tokens is less than one window of "
                f"{self.seq_len}; ask for more tokens or shorter windows."
            )
        self.shard = parse_shard(self.shard)
        self.reader = CorpusReader(self.source, self.column)  # missing files fail here
        if self.prepend_bos and self.tokenizer.bos_token_id is None:
            raise RopeInterpError("prepend_bos=True but the tokenizer has no BOS token.")

    @property
    def max_windows(self) -> int | None:
        """Windows of the whole run (all shards), or None for the whole corpus."""
        return None if self.max_tokens is None else self.max_tokens // self.seq_len

    def shard_windows(self) -> int | None:
        """Windows this shard will yield under the budget (None without a budget)."""
        if self.max_windows is None:
            return None
        index, count = self.shard
        return len(range(index, self.max_windows, count))

    def windows(self) -> Iterator[Int[Tensor, "pos"]]:
        """This shard's windows, in corpus order, each `seq_len` tokens (BOS first if
        `prepend_bos`)."""
        body = self.seq_len - 1 if self.prepend_bos else self.seq_len
        index, count = self.shard
        bos = [self.tokenizer.bos_token_id] if self.prepend_bos else []
        cutter = _Windows(self.reader.pieces(), self.tokenizer, body, self.max_windows)
        for number, window in enumerate(cutter):  # number: global window index (all shards)
            if number % count == index:
                yield torch.tensor(bos + window, dtype=torch.long)
        if cutter.tokens == 0:
            why = _why(self.note())
            raise RopeInterpError(
                f"The corpus {self.source!r} is empty: no non-blank text was found{why}."
            )

    def note(self) -> str:
        """What the last pass skipped (rows whose text field is not text), or ''."""
        return self.reader.note()

    def batches(
        self, batch_size: int, progress: bool = False
    ) -> Iterator[Int[Tensor, "batch pos"]]:
        """This shard's windows, `batch_size` at a time (the last batch may be smaller), with
        an optional progress bar in tokens."""
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise RopeInterpError(f"batch_size must be ≥ 1, got {batch_size}.")
        windows = self.shard_windows()
        total = None if windows is None else windows * self.seq_len
        with tqdm(
            total=total, unit="tok", unit_scale=True, desc="tokens", disable=not progress
        ) as bar:
            group: list[Tensor] = []
            for window in self.windows():
                group.append(window)
                if len(group) == batch_size:
                    yield torch.stack(group)
                    bar.update(batch_size * self.seq_len)
                    group = []
            if group:
                yield torch.stack(group)
                bar.update(len(group) * self.seq_len)

    def describe(self) -> str:
        budget = "whole corpus" if self.max_tokens is None else f"budget {self.max_tokens} tokens"
        index, count = self.shard
        shard = f", shard {index}/{count}" if count > 1 else ""
        bos = "BOS + text" if self.prepend_bos else "text only, no BOS"
        return f"{self.source}: streamed windows of {self.seq_len} tokens, {budget}{shard} ({bos})"


def stream_corpus(
    model: HostModel,
    source: str = EMBEDDED_CORPUS,
    seq_len: int = 256,
    max_tokens: int | None = None,
    shard: tuple[int, int] | str = (0, 1),
    prepend_bos: bool | None = None,
    column: str = "text",
) -> TokenStream:
    """A `TokenStream` for `model` (its tokenizer, context length and BOS default): the
    streaming counterpart of `load_corpus` for corpora of any size."""
    if model.tokenizer is None:
        raise RopeInterpError("The model has no tokenizer; pass token tensors directly instead.")
    if prepend_bos is None:
        prepend_bos = bool(model.cfg.default_prepend_bos)
    return TokenStream(
        source,
        model.tokenizer,
        seq_len,
        prepend_bos,
        max_tokens,
        parse_shard(shard),
        column,
        n_ctx=model.cfg.n_ctx,
    )
