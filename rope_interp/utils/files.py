"""The files rope-interp reads are what they seem, and it never writes over one it should not.

- `check_regular_file`: an input is a regular file, not a FIFO, device or socket (opening
  those can block forever); checked with `stat`, so nothing is opened.
- `refuse_overlap`: no output is an input: the same file (symlinks resolved, hard links by
  device and inode) or a folder holding one.
- `refuse_collisions`: no two outputs are one path, and none lies inside a file output.
- `refuse_repeated`: no input is given twice, by content.
- `written_by_rope_interp`: whether an existing output is one rope-interp wrote, so that
  writing over it loses nothing of the user's. HTML reports carry the generator meta tag,
  statistics files rope-interp's metadata, tables rope-interp's columns, and folders the
  `MARKER` file that `mark_folder` leaves in every folder the command line writes into.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from rope_interp.errors import RopeInterpError
from rope_interp.utils.atomic import atomic_write_text

MARKER = ".rope-interp"
_MARKER_TEXT = (
    "rope-interp wrote this folder. It writes into a folder only if the folder is new, empty, "
    "or holds this file (see `rope-interp COMMAND --help`, option --overwrite).\n"
)
_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
# The columns that identify each table rope-interp writes (its header holds all of them).
TABLE_COLUMNS = {
    "stats-table": ("kind", "layer", "head", "pair", "mean_norm"),
    "ablation-table": ("condition", "delta_loss"),
    "heads-table": ("condition", "layer", "head"),
}
KINDS = {
    "report": "a rope-interp HTML report",
    "stats": "a rope-interp statistics file",
    "stats-table": "a rope-interp statistics table",
    "ablation-table": "a rope-interp ablation table",
    "heads-table": "a rope-interp per-head table",
}
_HEAD_BYTES = 65536


# ---- what a path is --------------------------------------------------------------------------
def special_kind(path: str | Path) -> str | None:
    """'a FIFO (named pipe)', 'a character device', ... for a path that exists and is neither
    a regular file nor a folder (symlinks followed); None otherwise. Opens nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for test, name in _SPECIAL if test(mode)), None)


def check_regular_file(path: str | Path, what: str = "File") -> Path:
    """`path` if it is a regular file (symlinks followed); else a one-line `RopeInterpError`
    saying what it is instead: missing, a broken link, a folder, a FIFO, a device or a
    socket."""
    path = Path(path).expanduser()
    if kind := special_kind(path):
        raise RopeInterpError(
            f"{what} {path} is {kind}, not a regular file; give the path of a file."
        )
    if path.is_dir():
        raise RopeInterpError(f"{what} {path} is a directory, not a file.")
    if path.is_symlink() and not path.exists():
        raise RopeInterpError(f"{what} {path} is a broken symbolic link (or a loop of links).")
    if not path.is_file():
        raise RopeInterpError(f"{what} {path} does not exist.")
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether `a` and `b` name one file: the same device and inode where both exist (hard
    links, symlinks), else the same real path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _relation(output: Path, source: Path) -> str | None:
    """How output path `output` overlaps input path `source`, in words; None if it does not."""
    if same_file(output, source):
        return "the same file as"
    out, src = Path(os.path.realpath(output)), Path(os.path.realpath(source))
    if out.is_relative_to(src):
        return "inside"
    if src.is_relative_to(out):
        return "a folder holding"
    return None


# ---- refusals --------------------------------------------------------------------------------
def refuse_overlap(
    outputs: Iterable[tuple[str, str | Path]], inputs: Sequence[tuple[str, str | Path]]
) -> None:
    """A `RopeInterpError` naming both when an output (`(option, path)`) is an input, lies in
    an input folder, or is a folder holding an input."""
    for out_name, output in outputs:
        for in_name, source in inputs:
            output, source = Path(output).expanduser(), Path(source).expanduser()
            if relation := _relation(output, source):
                raise RopeInterpError(
                    f"{out_name} {output} is {relation} {in_name} {source}; rope-interp never "
                    f"writes over its inputs: choose another path for {out_name}."
                )


def refuse_collisions(outputs: Sequence[tuple[str, str | Path, bool]]) -> None:
    """A `RopeInterpError` naming both when two outputs (`(option, path, is_folder)`) are one
    path (a file twice, or a file and a folder), or one lies inside a file output. Two
    options naming one folder, or a file inside a folder output, are fine."""
    for i, (name_a, a, folder_a) in enumerate(outputs):
        for name_b, b, folder_b in outputs[i + 1 :]:
            a, b = Path(a).expanduser(), Path(b).expanduser()
            same = os.path.realpath(a) == os.path.realpath(b)
            if same and folder_a and folder_b:
                continue
            inside = _inside(b, a) and not folder_a or _inside(a, b) and not folder_b
            if same or inside:
                relation = "the same path as" if same else "inside, or holding,"
                raise RopeInterpError(
                    f"{name_a} {a} and {name_b} {b}: one output would be {relation} the other; "
                    "give each output its own path."
                )


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies strictly inside `folder` (symlinks resolved)."""
    real, container = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real != container and real.is_relative_to(container)


def content_digest(path: str | Path) -> str:
    """SHA-256 of the bytes of a regular file (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with open(check_regular_file(path), "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def refuse_repeated(paths: Iterable[str | Path], what: str = "input") -> None:
    """A `RopeInterpError` naming both when two of `paths` hold the same bytes (the same file
    twice, a link or a copy), which would count one input twice."""
    seen: dict[str, Path] = {}
    for path in map(Path, paths):
        digest = content_digest(path)
        if digest in seen:
            raise RopeInterpError(
                f"{what} {path} has the same content as {what} {seen[digest]}: it would be "
                "counted twice; give each file once."
            )
        seen[digest] = path


# ---- what rope-interp wrote ------------------------------------------------------------------
def mark_folder(folder: str | Path) -> Path:
    """Create `folder` if needed and leave the `MARKER` file in it; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).exists():
        atomic_write_text(folder / MARKER, _MARKER_TEXT)
    return folder


def written_by_rope_interp(path: str | Path, kind: str) -> bool:
    """Whether `path` (an existing regular file, or a folder for kind 'folder') holds only what
    rope-interp writes there: a folder that is empty, carries the `MARKER` or is an experiment
    run folder written before the marker existed; an empty file; or a file of `kind` (a key of
    `KINDS`) recognised by its content."""
    path = Path(path)
    if kind == "folder":
        return not any(path.iterdir()) or (path / MARKER).is_file() or _is_run_folder(path)
    head = _head(path)
    if not head.strip():
        return path.stat().st_size == len(head)  # empty or blank: nothing to lose
    if kind == "report":
        return b'<meta name="generator" content="rope-interp' in head
    if kind == "stats":
        return {"spec", "tokens_seen"} <= set(_safetensors_metadata(path))
    return set(TABLE_COLUMNS[kind]) <= set(_table_columns(path, head))


def _is_run_folder(path: Path) -> bool:
    """An experiment run folder of an earlier rope-interp (no marker yet): a `conditions`
    folder of condition records (JSON objects with name, key and parts), nothing foreign."""
    records = list((path / "conditions").glob("*.json")) if (path / "conditions").is_dir() else []
    if not records:
        return False
    for record in records:
        if special_kind(record):  # a FIFO would block the read
            return False
        try:
            content = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            return False
        if not (isinstance(content, dict) and {"name", "key", "parts"} <= set(content)):
            return False
    return True


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_HEAD_BYTES)


def _safetensors_metadata(path: Path) -> dict:
    """The `__metadata__` of a safetensors header; {} for anything else."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 100 * 2**20:
                return {}
            header = json.loads(handle.read(size))
        return header.get("__metadata__") or {}
    except (OSError, struct.error, ValueError, AttributeError, RecursionError):
        return {}


def _table_columns(path: Path, head: bytes) -> list[str]:
    """The column names of a CSV (its first line) or Parquet file; [] if unreadable."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except Exception:  # noqa: BLE001 — any unreadable file is simply not ours
            return []
    first = head.decode("utf-8", errors="replace").splitlines()[0]
    return [name.strip().strip('"') for name in first.split(",")]
