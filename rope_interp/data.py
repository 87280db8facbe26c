"""Corpora → token windows `Int[Tensor, "batch pos"]`.

Three sources: the embedded default (the English prose of Python's `pydoc_data.topics`, ~100k
tokens, always offline), text files (paths or globs) and a Hugging Face dataset (streamed).

BOS handling: the text is tokenized without special tokens into one stream, cut into
non-overlapping windows, and `n_windows` of them are drawn with a seeded permutation. If
`prepend_bos` (default: the model's `cfg.default_prepend_bos`), each window is the tokenizer's
BOS followed by `seq_len - 1` text tokens; otherwise `seq_len` text tokens. The built-in
SmolLM2 model does not use a BOS token, so its windows start with a text token.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from rope_interp.errors import RopeInterpError

EMBEDDED_CORPUS = "pydoc"


@dataclass(frozen=True)
class Corpus:
    """Token windows drawn from a named text source."""

    name: str
    tokens: Int[Tensor, "batch pos"]
    prepend_bos: bool

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
        return f"{self.name}: {n} windows × {length} tokens = {self.n_tokens} tokens ({bos})"


def embedded_texts() -> list[str]:
    """The English prose shipped with Python (`pydoc_data.topics`), one text per topic."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def text_file_texts(patterns: str | Iterable[str]) -> list[str]:
    """The contents of text files named by paths or glob patterns."""
    paths = resolve_text_files(patterns)
    return [Path(p).read_text(encoding="utf-8", errors="replace") for p in paths]


def resolve_text_files(patterns: str | Iterable[str]) -> list[str]:
    """The files named by paths or glob patterns, without reading them; raises
    `RopeInterpError` for a pattern that matches nothing, a directory, a FIFO, device or socket,
    or only empty files."""
    patterns = [patterns] if isinstance(patterns, str | os.PathLike) else list(patterns)
    paths: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(str(pattern)), recursive=True))
        if not matched:
            raise RopeInterpError(f"No file matches {pattern!r}: give existing paths or globs.")
        if len(matched) == 1 and Path(matched[0]).is_dir():
            folder = str(pattern).rstrip("/")
            raise RopeInterpError(
                f"Corpus {pattern!r} is a directory; name the text files in it, e.g. "
                f"'{folder}/*.txt'."
            )
        paths.extend(str(p) for p in _files_among(matched))
    if paths and all(Path(p).stat().st_size == 0 for p in paths):
        raise RopeInterpError(f"The corpus files {patterns} are empty; give files with text.")
    return paths


def hf_dataset_texts(
    name: str, column: str = "text", split: str = "train", max_chars: int = 2_000_000, **kwargs
) -> list[str]:
    """Texts from a Hugging Face dataset (streamed; stops after `max_chars` characters)."""
    import datasets

    stream = datasets.load_dataset(name, split=split, streaming=True, **kwargs)
    texts: list[str] = []
    total = 0
    for row in stream:
        if column not in row:
            raise RopeInterpError(
                f"Dataset {name!r} has no column {column!r}; its columns are {sorted(row)}."
            )
        texts.append(row[column])
        total += len(row[column])
        if total >= max_chars:
            break
    return texts


def texts_for(source: str) -> tuple[str, list[str]]:
    """Resolve a corpus spec: `"pydoc"` (embedded), `"hf:NAME[:COLUMN]"`, or file paths/globs
    (comma-separated). Returns (display name, texts)."""
    if source == EMBEDDED_CORPUS:
        return "pydoc_data.topics (embedded)", embedded_texts()
    if source.startswith("hf:"):
        name, _, column = source[3:].partition(":")
        return f"HF dataset {name}", hf_dataset_texts(name, column or "text")
    return source, text_file_texts(source.split(","))


def token_windows(
    texts: Iterable[str],
    tokenizer,
    seq_len: int,
    n_windows: int,
    seed: int = 0,
    prepend_bos: bool = False,
    n_ctx: int | None = None,
) -> Int[Tensor, "batch pos"]:
    """Tokenize `texts` into one stream and draw `n_windows` non-overlapping windows of
    `seq_len` tokens (deterministic under `seed`)."""
    if seq_len < 2:
        raise RopeInterpError(f"seq_len must be ≥ 2, got {seq_len}.")
    if n_ctx is not None and seq_len > n_ctx:
        raise RopeInterpError(
            f"seq_len {seq_len} is longer than the model's context ({n_ctx}); "
            f"use seq_len ≤ {n_ctx}."
        )
    if n_windows < 1:
        raise RopeInterpError(f"n_windows must be ≥ 1, got {n_windows}.")
    joined = "\n\n".join(t for t in texts if t and t.strip())
    if not joined:
        raise RopeInterpError("The corpus is empty: no non-blank text was found.")
    stream = torch.tensor(tokenizer.encode(joined, add_special_tokens=False), dtype=torch.long)
    body = seq_len - 1 if prepend_bos else seq_len
    available = stream.numel() // body
    if available < n_windows:
        raise RopeInterpError(
            f"The corpus has {stream.numel()} tokens: {available} windows of {body} text tokens, "
            f"fewer than the {n_windows} requested. Ask for fewer or shorter windows, or add text."
        )
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(available, generator=generator)[:n_windows]
    windows = stream[: available * body].view(available, body)[picks]
    if prepend_bos:
        if tokenizer.bos_token_id is None:
            raise RopeInterpError("prepend_bos=True but the tokenizer has no BOS token.")
        bos = torch.full((n_windows, 1), tokenizer.bos_token_id, dtype=torch.long)
        windows = torch.cat([bos, windows], dim=1)
    return windows


def load_corpus(
    model,
    source: str = EMBEDDED_CORPUS,
    seq_len: int = 256,
    n_windows: int = 16,
    seed: int = 0,
    prepend_bos: bool | None = None,
) -> Corpus:
    """Token windows for `model` (its tokenizer, context length and BOS default).

    Args:
        source: `"pydoc"` (embedded), `"hf:NAME[:COLUMN]"`, or comma-separated paths/globs.
    """
    if model.tokenizer is None:
        raise RopeInterpError("The model has no tokenizer; pass token tensors directly instead.")
    if prepend_bos is None:
        prepend_bos = bool(model.cfg.default_prepend_bos)
    name, texts = texts_for(source)
    tokens = token_windows(
        texts, model.tokenizer, seq_len, n_windows, seed, prepend_bos, n_ctx=model.cfg.n_ctx
    )
    return Corpus(name=name, tokens=tokens, prepend_bos=prepend_bos)


# ---- corpora of any size: streaming token windows ---------------------------------------------
_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_CHUNK_CHARS = 1 << 20  # text tokenised per call: bounded memory, few tokenizer calls


def parse_token_count(text: str | int, what: str = "--tokens") -> int:
    """`"100M"`, `"50k"`, `"1e6"`, `"2048"` → a positive int (k = 10³, M = 10⁶, B/G = 10⁹)."""
    from rope_interp.numbers import parse_number

    if isinstance(text, int):
        value = float(text)
    else:
        stripped = str(text).strip()
        scale = _SUFFIXES.get(stripped[-1:].lower(), 1) if stripped else 1
        number = stripped[:-1] if scale != 1 else stripped
        hint = f"{what} takes a token count such as 4096, 50k, 100M or 1e6; got {text!r}."
        try:
            value = parse_number(number, what) * scale
        except RopeInterpError:
            raise RopeInterpError(hint) from None
    if value < 1 or value != int(value):
        raise RopeInterpError(f"{what} must be a whole number of tokens ≥ 1; got {text!r}.")
    return int(value)


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


def _file_paths(patterns: Iterable[str]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(str(pattern)), recursive=True))
        if not matched:
            raise RopeInterpError(f"No file matches {pattern!r}: give existing paths or globs.")
        files = _files_among(matched)
        if not files:
            raise RopeInterpError(f"{pattern!r} names no file (a directory? use DIR/*.txt).")
        paths.extend(files)
    return paths


def _files_among(matched: Iterable[str]) -> list[Path]:
    """The files a glob matched, folders skipped; a FIFO, device or socket is refused (reading
    one could block forever)."""
    from rope_interp.files import check_regular_file

    return [check_regular_file(p, "Corpus file") for p in matched if not Path(p).is_dir()]


def _column_error(where: str, column: str, columns) -> RopeInterpError:
    return RopeInterpError(f"{where} has no column {column!r}; its columns are {sorted(columns)}.")


def iter_file_texts(path: Path, column: str = "text") -> Iterator[str]:
    """Texts of one file, lazily: `.jsonl` (one JSON object per line, field `column`),
    `.parquet` (column `column`, read in record batches), anything else as UTF-8 text (in
    blocks of ~1 MB at line boundaries)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        if column not in table.schema_arrow.names:
            raise _column_error(str(path), column, table.schema_arrow.names)
        for batch in table.iter_batches(batch_size=1024, columns=[column]):
            yield from (text for text in batch.column(0).to_pylist() if text)
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        if suffix in (".jsonl", ".ndjson"):
            import json

            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise RopeInterpError(f"{path}:{number} is not a JSON object.") from None
                if not isinstance(row, dict) or column not in row:
                    raise _column_error(f"{path}:{number}", column, getattr(row, "keys", list)())
                yield str(row[column])
            return
        block: list[str] = []
        size = 0
        for line in handle:
            block.append(line)
            size += len(line)
            if size >= _CHUNK_CHARS:
                yield "".join(block)
                block, size = [], 0
        if block:
            yield "".join(block)


def iter_hf_texts(name: str, column: str = "text", split: str = "train", **kwargs):
    """Texts of a Hugging Face dataset, streamed row by row (no character cap)."""
    import datasets

    stream = datasets.load_dataset(name, split=split, streaming=True, **kwargs)
    for row in stream:
        if column not in row:
            raise _column_error(f"Dataset {name!r}", column, row)
        yield row[column]


def iter_texts(source: str, column: str = "text") -> tuple[str, Iterator[str]]:
    """A corpus spec (as `texts_for`) → (display name, lazy iterator of texts)."""
    if source == EMBEDDED_CORPUS:
        return "pydoc_data.topics (embedded)", iter(embedded_texts())
    if source.startswith("hf:"):
        name, _, hf_column = source[3:].partition(":")
        return f"HF dataset {name}", iter_hf_texts(name, hf_column or column)
    paths = _file_paths(source.split(","))

    def texts() -> Iterator[str]:
        for path in paths:
            yield from iter_file_texts(path, column)

    return source, texts()


@dataclass
class TokenStream:
    """Token windows streamed from a corpus of any size: texts are read lazily, tokenised
    ~1 MB at a time, and cut into consecutive non-overlapping windows in corpus order (no
    shuffling); memory does not depend on the corpus size.

    `max_tokens` caps the windows of the whole (unsharded) run at `max_tokens // seq_len`;
    `shard=(i, N)` keeps windows i, i+N, i+2N, ...: the N shards are disjoint and together are
    the unsharded run. Documents are joined by a blank line, as in `token_windows`.
    """

    source: str
    tokenizer: object
    seq_len: int
    prepend_bos: bool = False
    max_tokens: int | None = None
    shard: tuple[int, int] | str = (0, 1)
    column: str = "text"
    n_ctx: int | None = None

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise RopeInterpError(f"seq_len must be ≥ 2, got {self.seq_len}.")
        if self.n_ctx is not None and self.seq_len > self.n_ctx:
            raise RopeInterpError(
                f"seq_len {self.seq_len} is longer than the model's context ({self.n_ctx}); "
                f"use seq_len ≤ {self.n_ctx}."
            )
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise RopeInterpError(
                f"A budget of {self.max_tokens} tokens is less than one window of "
                f"{self.seq_len}; ask for more tokens or shorter windows."
            )
        self.shard = parse_shard(self.shard)
        iter_texts(self.source, self.column)  # missing files fail here, before any work
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

    def _token_chunks(self) -> Iterator[list[int]]:
        _, texts = iter_texts(self.source, self.column)
        separator = self.tokenizer.encode("\n\n", add_special_tokens=False)
        block: list[str] = []
        size, first = 0, True
        for text in texts:
            if not text or not text.strip():
                continue
            block.append(text)
            size += len(text)
            if size >= _CHUNK_CHARS:
                yield ([] if first else separator) + self._encode("\n\n".join(block))
                block, size, first = [], 0, False
        if block:
            yield ([] if first else separator) + self._encode("\n\n".join(block))

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def windows(self) -> Iterator[Int[Tensor, "pos"]]:
        """This shard's windows, in corpus order, each `seq_len` tokens (BOS first if
        `prepend_bos`)."""
        body = self.seq_len - 1 if self.prepend_bos else self.seq_len
        index, count = self.shard
        limit = self.max_windows
        bos = [self.tokenizer.bos_token_id] if self.prepend_bos else []
        pending: list[int] = []
        number = 0  # global window index (all shards)
        for chunk in self._token_chunks():
            pending.extend(chunk)
            start = 0
            while len(pending) - start >= body:
                if limit is not None and number >= limit:
                    return
                if number % count == index:
                    window = bos + pending[start : start + body]
                    yield torch.tensor(window, dtype=torch.long)
                number += 1
                start += body
            del pending[:start]

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
    model,
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
