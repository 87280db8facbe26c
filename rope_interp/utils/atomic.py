"""One way to write a file: all of it or none of it.

`atomic_write(path)` yields a temporary path in the target's own folder, created exclusively
(`mkstemp`: a fresh random name, `O_EXCL`, so a symlink planted there is never followed); the
caller writes it; it is flushed to disk and renamed over `path` in one step. On any failure
(full disk, Ctrl-C, an exception in the writer) the temporary file is removed and the previous
`path`, if any, is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rope_interp.errors import RopeInterpError


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Context manager: write to the yielded temporary path; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(error, OSError) and error.errno is not None:
            # Name the file the caller asked for, not the temporary one (now removed).
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_table(frame, path: str | Path) -> Path:
    """A tidy table (`pandas.DataFrame`) as CSV, or Parquet where `path` ends in .parquet,
    written atomically; returns `path`."""
    path = Path(path)
    with atomic_write(path) as tmp:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return path


def check_writable_file(path: str | Path, what: str = "output") -> Path:
    """Check, before any work, that `atomic_write(path)` can succeed: `path` is not a folder
    and its nearest existing folder accepts new files (tried with a temporary file, removed
    at once). Raises `RopeInterpError` naming `what` otherwise; creates nothing."""
    path = Path(path).expanduser()
    if not path.name:
        raise RopeInterpError(f"{what} {str(path)!r} is not a file name.")
    if path.is_dir():
        raise RopeInterpError(f"{what} {path} is a directory; give a file name.")
    _check_can_create_in(path.parent, what, path)
    return path


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check, before any work, that files can be written in folder `path` (created later if
    missing). Raises `RopeInterpError` naming `what` otherwise; creates nothing."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise RopeInterpError(f"{what} {path} is a file, not a folder; give a folder.")
    _check_can_create_in(path, what, path)
    return path


def _check_can_create_in(folder: Path, what: str, shown: Path) -> None:
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RopeInterpError(
            f"{what} {shown}: {existing} is a file, so no folder can be created there."
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".rope-interp-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise RopeInterpError(
            f"{what} {shown} cannot be written: {existing} refuses new files "
            f"({error.strerror}). Choose a writable location."
        ) from None
