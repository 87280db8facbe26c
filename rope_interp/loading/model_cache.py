"""A cache folder of converted model files that checks itself and repairs itself.

    entry = cached_entry(root, "SmolLM2-...-v1", build=write_files, source="model.gguf")
    # entry: a folder whose files match its manifest (sizes and CRC-32s)

Layout: `root/<key>-c<LAYOUT>/` holds the files `build(folder)` wrote plus `manifest.json`,
written last, listing every file's size and CRC-32. An entry is used only if every listed file
is there with its size and checksum (~0.5 s per GB); otherwise it is rebuilt from the source
with one line on stderr saying why. A damaged manifest (not JSON, entries of the wrong type,
paths leading out of the entry) or a FIFO or device in the entry counts as damage: it is
never followed or opened.

Concurrency: a new entry is built in a fresh temporary folder (`mkdtemp` next to it) and moved
into place by one rename, under an exclusive `flock` on `<entry>.lock`, so several processes
loading the same model for the first time convert it once and never see a half-written entry.
Readers of a complete entry take no lock: a finished entry is never modified, only replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from rope_interp.errors import CacheDamaged
from rope_interp.utils.atomic import atomic_write_text
from rope_interp.utils.files import special_kind
from rope_interp.utils.logs import note

MANIFEST = "manifest.json"
# Bump when the layout of an entry changes.
LAYOUT_VERSION = 1
_CHUNK = 1 << 24

T = TypeVar("T")


def entry_path(root: str | Path, key: str) -> Path:
    """The folder of the entry named `key` under `root`."""
    return Path(root) / f"{key}-c{LAYOUT_VERSION}"


def file_checksum(path: Path) -> str:
    """CRC-32 of a file's bytes, as 8 hex digits (detects truncation and corrupted bytes)."""
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def write_manifest(folder: Path) -> dict:
    """List every file under `folder` (size, CRC-32) in `folder/manifest.json`; returns it."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative != MANIFEST:
            files[relative] = {"size": path.stat().st_size, "crc32": file_checksum(path)}
    manifest = {"layout": LAYOUT_VERSION, "files": files}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify(folder: Path, required: tuple[str, ...] = ()) -> None:
    """Raise `CacheDamaged` (with the reason) unless `folder` matches its manifest and holds
    the `required` files."""
    if not folder.is_dir():
        raise CacheDamaged("missing")
    if not os.path.lexists(folder / MANIFEST):
        raise CacheDamaged("no manifest (incomplete entry)")
    if special_kind(folder / MANIFEST) or not (folder / MANIFEST).is_file():
        raise CacheDamaged("the manifest is not a regular file")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("layout") != LAYOUT_VERSION or not isinstance(files, dict):
            raise CacheDamaged("manifest of another layout")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise CacheDamaged("unreadable manifest") from None
    for name, expected in files.items():
        if not _listed_file(name, expected):
            raise CacheDamaged(f"the manifest's entry {name!r} is damaged")
    for name in required:
        if name not in files:
            raise CacheDamaged(f"{name} not listed in the manifest")
    for name, expected in files.items():
        path = folder / name
        if special_kind(path) or not path.is_file():  # a FIFO here is never opened
            raise CacheDamaged(f"{name} is missing or not a regular file")
        size = path.stat().st_size
        if size != expected.get("size"):
            raise CacheDamaged(f"{name} has {size} bytes, expected {expected.get('size')}")
    for name, expected in files.items():  # sizes first: they are free
        if file_checksum(folder / name) != expected.get("crc32"):
            raise CacheDamaged(f"{name} is corrupted (checksum mismatch)")


def _listed_file(name: object, expected: object) -> bool:
    """A manifest entry: a relative path inside the entry, with an integer size and a CRC."""
    if not isinstance(name, str) or not isinstance(expected, dict):
        return False
    parts = Path(name).parts
    size, crc = expected.get("size"), expected.get("crc32")
    return (
        bool(parts)
        and not Path(name).is_absolute()
        and ".." not in parts
        and isinstance(size, int)
        and not isinstance(size, bool)
        and isinstance(crc, str)
    )


def cached_entry(
    root: str | Path,
    key: str,
    build: Callable[[Path], None],
    source: str,
    required: tuple[str, ...] = (),
) -> Path:
    """The verified folder of entry `key`, built by `build(folder)` if absent or damaged.

    `build` writes the entry's files into the (empty, temporary) folder it is given; the
    manifest is added after it returns. A damaged entry is rebuilt with one line on stderr.
    """
    entry = entry_path(root, key)
    try:
        verify(entry, required)
        return entry
    except CacheDamaged as damage:
        reason = str(damage)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _locked(entry.with_name(entry.name + ".lock")):
        try:  # another process may have built it while we waited for the lock
            verify(entry, required)
            return entry
        except CacheDamaged as damage:
            reason = str(damage)
        if reason != "missing":
            note(f"the model cache {entry} is damaged ({reason}); rebuilding it from {source}.")
        _build_into_place(entry, build, required)
    return entry


def load_cached(
    root: str | Path,
    key: str,
    build: Callable[[Path], None],
    load: Callable[[Path], T],
    source: str,
    required: tuple[str, ...] = (),
) -> T:
    """`load(folder)` of the verified entry `key`; if loading a verified entry still fails
    (e.g. a file the manifest cannot judge), the entry is rebuilt once and loaded again."""
    entry = cached_entry(root, key, build, source, required)
    try:
        return load(entry)
    except Exception as error:  # noqa: BLE001 (any failure to read the cache means: rebuild)
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    with _locked(entry.with_name(entry.name + ".lock")):
        note(f"the model cache {entry} could not be read ({reason}); rebuilding it from {source}.")
        _build_into_place(entry, build, required)
    return load(entry)


def _build_into_place(entry: Path, build: Callable[[Path], None], required: tuple[str, ...]):
    """Build in a fresh temporary folder, then swap it in (caller holds the lock)."""
    for orphan in entry.parent.glob(f".{entry.name}.*"):  # left by a build that was killed
        shutil.rmtree(orphan, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
    try:
        build(staging)
        missing = [name for name in required if not (staging / name).is_file()]
        if missing:
            raise RuntimeError(f"building the cache entry did not write {missing}")
        write_manifest(staging)
        _fsync_tree(staging)
        if entry.exists():
            trash = Path(
                tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".old", dir=entry.parent)
            )
            os.replace(entry, trash / "entry")
            os.replace(staging, entry)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, entry)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb+") as handle:
                os.fsync(handle.fileno())


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock held for the block (`filelock`: released when the process dies, on
    every platform)."""
    if lock_path.is_symlink():  # opening it would truncate whatever it points to
        lock_path.unlink()
    with FileLock(lock_path):
        yield
