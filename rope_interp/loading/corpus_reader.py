"""A corpus spec → its documents as text, in bounded pieces: the one reader of every command.

A spec is `"pydoc"` (the embedded English prose), `"hf:NAME[:COLUMN]"` (a Hugging Face dataset,
streamed) or comma-separated file paths and globs. A file is read as what it is, by its suffix
(a gzip, bzip2 or xz file, recognised by its first bytes, is decompressed as it is read and
named by the suffix before `.gz`/`.bz2`/`.xz`):

- `.jsonl`/`.ndjson`: one JSON object per line; the document is its field `column`;
- `.parquet`: the string column `column`, one document per row, read in record batches;
- anything else: UTF-8 text, one document per file (a byte-order mark is dropped).

`CorpusReader.pieces()` yields `(text, starts_document)`: every non-blank document in corpus
order, in pieces of at most `READ_CHARS` characters, so that reading holds one piece at a time
whatever the line lengths. Exceptions, both bounded: a JSONL record is parsed whole (lines over
`MAX_RECORD_BYTES` are refused) and Parquet is read `PARQUET_ROWS` rows at a time.

Values that are not text (null, numbers, booleans, lists, objects) are skipped and counted
(`skipped`, `note()`). What is not text is refused with one line saying what the file looks
like and what to do: binary files (known formats by their first bytes, others by a NUL byte),
zip/zstd archives, UTF-16, and UTF-8 decoding errors (a wrong encoding would be analysed as
other characters, so even one bad byte is refused, with its offset and line).

`text_blocks` cuts the pieces into blocks for a tokenizer: documents joined by a blank line,
cut at the start of a whitespace run, so that block-by-block tokenisation gives the tokens of
the whole text (byte-level BPE tokenizers split words from whitespace runs the same way).
"""

from __future__ import annotations

import codecs
import glob
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from rope_interp.errors import RopeInterpError

EMBEDDED_CORPUS = "pydoc"
READ_CHARS = 1 << 16  # the most text one read (or one slice of a long value) holds
MAX_RECORD_BYTES = 1 << 24  # the longest JSONL line parsed (16 MiB)
PARQUET_ROWS = 256  # rows per Parquet record batch
_SNIFF_BYTES = 8192
_SEPARATOR = "\n\n"  # between documents
_SPACES = " \n\t\r\f\v"

# (first bytes, what the file looks like, what to do), checked in order
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
_BINARY = (
    (b"PAR1", "a Parquet file", "name it .parquet to read its text column"),
    (b"PK\x03\x04", "a zip archive", "unzip it and give the text files in it"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "decompress it first (zstd -d FILE)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract it and give the text files in it"),
    (b"%PDF", "a PDF document", "extract its text first (e.g. pdftotext FILE)"),
    (b"GGUF", "a GGUF model file", "give it as --model, not as a corpus"),
    (b"SQLite format 3\x00", "an SQLite database", "export its text first"),
    (b"\xff\xfe", "UTF-16 text", "convert it to UTF-8 (iconv -f UTF-16 -t UTF-8 FILE)"),
    (b"\xfe\xff", "UTF-16 text", "convert it to UTF-8 (iconv -f UTF-16 -t UTF-8 FILE)"),
    (b"\x89PNG", "a PNG image", "give text files"),
    (b"\xff\xd8\xff", "a JPEG image", "give text files"),
    (b"\x7fELF", "an executable", "give text files"),
)


class CorpusReader:
    """The documents of a corpus spec, read lazily in bounded pieces.

    Attributes:
        name: what to call the corpus in output.
        column: the text field of JSONL, Parquet and Hugging Face rows.
        paths: the files (none for the embedded corpus or a dataset).
        skipped: values of `column` that were not text, by JSON kind, in the last read.
        chars_read: characters read in the last read (text of skipped blank documents too).
    """

    def __init__(self, source: str, column: str = "text") -> None:
        self.source, self.column = source, column
        self.paths: list[Path] = []
        self.skipped: Counter[str] = Counter()
        self.chars_read = 0
        self.embedded = source == EMBEDDED_CORPUS
        if self.embedded:
            self.name = "pydoc_data.topics (embedded)"
        elif source.startswith("hf:"):
            self.dataset, _, hf_column = source[3:].partition(":")
            self.column = hf_column or column
            self.name = f"HF dataset {self.dataset}"
        else:
            self.paths = resolve_text_files(source.split(","))
            self.name = source

    def check(self) -> None:
        """Every file's format, encoding and text column, from its first bytes (or first JSONL
        record, or Parquet schema), without reading it whole: the mistakes a user can see
        before any work. Raises `RopeInterpError`."""
        for path in self.paths:
            kind = _file_kind(path)
            if kind == "parquet":
                _parquet_file(path, self.column)
                continue
            with _TextFile(path) as handle:
                if kind == "jsonl":
                    next(_jsonl_values(handle, self.column), None)

    def pieces(self) -> Iterator[tuple[str, bool]]:
        """`(text, starts_document)` for every non-blank document in corpus order, each piece at
        most `READ_CHARS` characters (whole for the embedded corpus, which is in memory)."""
        self.skipped.clear()
        self.chars_read = 0
        for document in self._documents():
            lead = ""  # whitespace that opens the document, until its first text
            started = False
            for piece in document:
                self.chars_read += len(piece)
                if started:
                    yield piece, False
                elif piece.strip():
                    yield lead + piece, True
                    started = True
                else:
                    lead = (lead + piece)[-READ_CHARS:]

    def texts(self) -> list[str]:
        """Every non-blank document whole, in memory (for small corpora; commands use
        `pieces`)."""
        texts: list[str] = []
        for piece, starts in self.pieces():
            if starts:
                texts.append(piece)
            else:
                texts[-1] += piece
        return texts

    def note(self) -> str:
        """What the last read skipped, in words ('' when nothing was)."""
        if not self.skipped:
            return ""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items()))
        total = sum(self.skipped.values())
        return f"skipped {total} row(s) whose {self.column!r} is not text ({kinds})"

    def _documents(self) -> Iterator[Iterator[str]]:
        if self.embedded:
            yield from (iter([text]) for text in embedded_texts())
        elif self.paths:
            for path in self.paths:
                yield from self._file_documents(path)
        else:
            yield from self._text_values(_hf_values(self.dataset, self.column))

    def _file_documents(self, path: Path) -> Iterator[Iterator[str]]:
        kind = _file_kind(path)
        if kind == "parquet":
            yield from self._text_values(_parquet_values(path, self.column))
            return
        with _TextFile(path) as handle:
            if kind == "jsonl":
                yield from self._text_values(_jsonl_values(handle, self.column))
            else:
                yield _text_chunks(handle)

    def _text_values(self, values: Iterable[Any]) -> Iterator[Iterator[str]]:
        """Each string value as a document (in slices); other values counted in `skipped`."""
        for value in values:
            if isinstance(value, str):
                yield (value[i : i + READ_CHARS] for i in range(0, len(value), READ_CHARS))
            else:
                self.skipped[_json_kind(value)] += 1


def embedded_texts() -> list[str]:
    """The English prose shipped with Python (`pydoc_data.topics`), one text per topic."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def text_blocks(pieces: Iterable[tuple[str, bool]], limit: Callable[[], int]) -> Iterator[str]:
    """The text of `pieces` (as `CorpusReader.pieces` yields them) in blocks of at most
    `limit()` characters (asked before each cut, so a reader can size blocks to what it still
    needs): documents joined by a blank line, each cut at the start of the last whitespace run
    that fits (hard at `limit()` where there is none), so that no token spans two blocks."""
    buffer: list[str] = []
    size, first = 0, True
    for text, starts in pieces:
        if starts and not first:
            buffer.append(_SEPARATOR)
            size += len(_SEPARATOR)
        first = False
        buffer.append(text)
        size += len(text)
        while size > (cap := max(1, limit())):
            joined = "".join(buffer)
            cut = whitespace_cut(joined, cap)
            yield joined[:cut]
            buffer, size = [joined[cut:]], len(joined) - cut
    if size:
        yield "".join(buffer)


def whitespace_cut(text: str, cap: int) -> int:
    """Where to cut `text` so that the first part has at most `cap` characters: the start of
    the last whitespace run that begins after the first character, else `cap`."""
    if len(text) <= cap:
        return len(text)
    last = max(text.rfind(space, 0, cap + 1) for space in _SPACES)
    start = len(text[:last].rstrip(_SPACES)) if last > 0 else 0
    return start if start > 0 else cap


# ---- files -------------------------------------------------------------------------------------
def resolve_text_files(patterns: str | Iterable[str]) -> list[Path]:
    """The files named by paths or glob patterns, without reading them; raises
    `RopeInterpError` for a pattern that matches nothing or only folders, a FIFO, device or
    socket, or only empty files."""
    from rope_interp.utils.files import check_regular_file

    patterns = [patterns] if isinstance(patterns, str | os.PathLike) else list(patterns)
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(str(pattern)), recursive=True))
        if not matched:
            raise RopeInterpError(f"No file matches {pattern!r}: give existing paths or globs.")
        files = [check_regular_file(p, "Corpus file") for p in matched if not Path(p).is_dir()]
        if not files:
            folder = str(pattern).rstrip("/")
            what = "is a directory" if len(matched) == 1 else "matches only directories"
            raise RopeInterpError(
                f"Corpus {pattern!r} {what}; name the text files in it, e.g. '{folder}/*.txt'."
            )
        paths.extend(files)
    if all(p.stat().st_size == 0 for p in paths):
        raise RopeInterpError(f"The corpus files {patterns} are empty; give files with text.")
    return paths


def _file_kind(path: Path) -> str:
    """'jsonl', 'parquet' or 'text', by the suffix (before a compression suffix)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz"):
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}.get(last, "text")


def _compression(head: bytes) -> str | None:
    return next((name for magic, name in _COMPRESSED.items() if head.startswith(magic)), None)


class _TextFile:
    """A file opened for binary reading (decompressed if gzip, bzip2 or xz), after its first
    bytes were checked to look like UTF-8 text; else a one-line `RopeInterpError`. A damaged
    compressed stream, found at any read, is one too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as raw:
            self.compression = _compression(raw.read(8))
        if self.compression is None:
            self.handle: IO[bytes] = path.open("rb")
        else:
            import bz2
            import gzip
            import lzma

            opener: dict[str, Any] = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}
            self.handle = opener[self.compression](path, "rb")
        try:
            head = self.read(_SNIFF_BYTES)
            _refuse_binary(path, head, self.compression)
            _decode(codecs.getincrementaldecoder("utf-8")(), head, path, 0, 1, final=False)
            self.handle.seek(0)
        except BaseException:
            self.handle.close()
            raise

    def read(self, size: int) -> bytes:
        return self._checked(self.handle.read, size)

    def readline(self, limit: int) -> bytes:
        return self._checked(self.handle.readline, limit)

    def _checked(self, method: Callable[[int], bytes], size: int) -> bytes:
        if self.compression is None:
            return method(size)
        import lzma

        try:
            return method(size)
        except (OSError, EOFError, lzma.LZMAError) as error:
            raise RopeInterpError(
                f"Corpus file {self.path} is {self.compression}-compressed but cannot be "
                f"decompressed ({error}); check it with `{self.compression} -t`, or give the "
                "file uncompressed."
            ) from None

    def __enter__(self) -> _TextFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.handle.close()


def _refuse_binary(path: Path, head: bytes, compression: str | None) -> None:
    inside = f" ({compression}-compressed)" if compression else ""
    for magic, looks, todo in _BINARY:
        if head.startswith(magic):
            raise RopeInterpError(
                f"Corpus file {path}{inside} looks like {looks}, not text; "
                f"{todo.replace('FILE', str(path))}."
            )
    if b"\x00" in head:
        raise RopeInterpError(
            f"Corpus file {path}{inside} looks like a binary file (it holds NUL bytes), not "
            "text; give UTF-8 text, .jsonl or .parquet files."
        )


def _decode(decoder, raw: bytes, path: Path, offset: int, line: int, final: bool) -> str:
    """`raw` (the bytes from `offset` of the file, on line `line`) decoded as strict UTF-8; a
    decoding error is a one-line `RopeInterpError` saying where."""
    buffered = len(decoder.getstate()[0])  # an incomplete character left by the last call
    try:
        return decoder.decode(raw, final=final)
    except UnicodeDecodeError as error:
        data = error.object  # the buffered bytes, then `raw`
        byte = f"byte 0x{data[error.start]:02x}" if error.start < len(data) else "a byte"
        line += data[: error.start].count(b"\n")
        raise RopeInterpError(
            f"Corpus file {path} is not UTF-8 text: {byte} at offset "
            f"{offset - buffered + error.start} (line {line}) cannot be decoded. Convert it to "
            f"UTF-8 (e.g. iconv -f latin1 -t UTF-8 {path} > {path.stem}.utf8{path.suffix}) "
            "and give that file."
        ) from None


def _text_chunks(handle: _TextFile) -> Iterator[str]:
    """A text file's characters, decoded as strict UTF-8 `READ_CHARS` bytes at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    while True:
        raw = handle.read(READ_CHARS)
        text = _decode(decoder, raw, handle.path, offset, line, final=not raw)
        if "\x00" in text:
            at = offset + raw.index(b"\x00")
            raise RopeInterpError(
                f"Corpus file {handle.path} holds a NUL byte at offset {at}: it is not a text "
                "file; give UTF-8 text, .jsonl or .parquet files."
            )
        if offset == 0:
            text = text.removeprefix("\ufeff")
        offset += len(raw)
        line += raw.count(b"\n")
        if text:
            yield text
        if not raw:
            return


def _jsonl_values(handle: _TextFile, column: str) -> Iterator[Any]:
    """The value of field `column` of each JSON object line (any JSON type)."""
    path, number, offset = handle.path, 0, 0
    while raw := handle.readline(MAX_RECORD_BYTES + 1):
        number += 1
        offset += len(raw)
        if len(raw) > MAX_RECORD_BYTES:
            raise RopeInterpError(
                f"{path}:{number} is longer than {MAX_RECORD_BYTES >> 20} MiB; a .jsonl record "
                "is parsed whole: split long documents into several records."
            )
        decoder = codecs.getincrementaldecoder("utf-8")()
        text = _decode(decoder, raw, path, offset - len(raw), number, final=True)
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise RopeInterpError(
                f"{where} is not valid JSON ({error.msg}, column {error.colno}); each line of a "
                ".jsonl file is one JSON object."
            ) from None
        if not isinstance(row, dict):
            raise RopeInterpError(
                f"{where} is a JSON {_json_kind(row)}, not an object; each line of a .jsonl "
                f"file is one JSON object with a {column!r} field."
            )
        if column not in row:
            raise column_error(where, column, row)
        yield row[column]


def _parquet_file(path: Path, column: str):
    """`path` as a `pyarrow.parquet.ParquetFile` whose column `column` holds strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with path.open("rb") as raw:
        head = raw.read(8)
    if compression := _compression(head):
        raise RopeInterpError(
            f"Corpus file {path} is {compression}-compressed; Parquet files are read "
            "uncompressed (their pages are compressed inside): decompress it first."
        )
    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise RopeInterpError(
            f"Corpus file {path} is named .parquet but is not a Parquet file ({error}); "
            "rename it to what it is."
        ) from None
    schema = table.schema_arrow
    if column not in schema.names:
        raise column_error(str(path), column, schema.names)
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not _is_text_type(kind):
        text_columns = [f.name for f in schema if _is_text_type(f.type)]
        raise RopeInterpError(
            f"Column {column!r} of {path} holds {kind} values, not text; name a text column "
            f"(its string columns: {text_columns})."
        )
    return table


def _is_text_type(kind) -> bool:
    import pyarrow as pa

    string_view = getattr(pa.types, "is_string_view", lambda _: False)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or string_view(kind)


def _parquet_values(path: Path, column: str) -> Iterator[Any]:
    table = _parquet_file(path, column)
    for batch in table.iter_batches(batch_size=PARQUET_ROWS, columns=[column]):
        yield from batch.column(0).to_pylist()


def _hf_values(name: str, column: str, split: str = "train") -> Iterator[Any]:
    """Column `column` of a Hugging Face dataset, streamed row by row."""
    import datasets

    for row in datasets.load_dataset(name, split=split, streaming=True):
        if column not in row:
            raise column_error(f"Dataset {name!r}", column, row)
        yield row[column]


def column_error(where: str, column: str, columns: Iterable[str]) -> RopeInterpError:
    return RopeInterpError(
        f"{where} has no column {column!r}; its columns are {sorted(columns)}. Name the text "
        "column (`stats --text-column NAME`, `hf:NAME:COLUMN`) or give rows with a "
        f"{column!r} field."
    )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
