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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
