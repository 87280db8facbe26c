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
    `RopeInterpError` for a pattern that matches nothing, a directory, or only empty files."""
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
        paths.extend(p for p in matched if Path(p).is_file())
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
