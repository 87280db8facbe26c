"""What a command writes, checked against what it reads, before any model loads.

Every output (file or folder) must be writable, must not be an input (`files.refuse_overlap`),
and, if it exists, must be something rope-interp wrote (`files.written_by_rope_interp`) unless
`--overwrite` is given. Non-regular files (FIFOs, devices) are never written over."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rope_interp.errors import RopeInterpError


@dataclass(frozen=True)
class Output:
    """A path a command writes: the option that names it, and what goes there (a key of
    `files.KINDS`, or 'folder')."""

    option: str
    path: str | Path  # a `Path` once made (`~` expanded)
    kind: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """`--overwrite`, for the commands that write files."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write over existing outputs that rope-interp did not write (files that are not "
        "its own, folders without its .rope-interp marker); never over an input",
    )


def check_outputs(
    outputs: Sequence[Output], inputs: Sequence[tuple[str, Path]], overwrite: bool = False
) -> None:
    """Every output writable, none another output or an input, none an existing file or
    folder that rope-interp did not write (unless `overwrite`): else one `RopeInterpError`
    naming the option."""
    from rope_interp.utils.atomic import check_writable_dir, check_writable_file
    from rope_interp.utils.files import refuse_collisions, refuse_overlap

    refuse_collisions([(o.option, o.path, o.kind == "folder") for o in outputs])
    for output in outputs:
        check = check_writable_dir if output.kind == "folder" else check_writable_file
        check(output.path, output.option)
    refuse_overlap([(o.option, o.path) for o in outputs], inputs)
    for output in outputs:
        check_not_foreign(output, overwrite)


def check_not_foreign(output: Output, overwrite: bool) -> None:
    """Refuse an existing output that rope-interp did not write (unless `overwrite`), and
    always one that is not a regular file or folder (a FIFO, a device)."""
    from rope_interp.utils.files import KINDS, MARKER, check_regular_file, written_by_rope_interp

    path = Path(output.path)
    if not path.exists():
        return
    if output.kind != "folder":
        check_regular_file(path, output.option)
    if overwrite or written_by_rope_interp(path, output.kind):
        return
    if output.kind == "folder":
        raise RopeInterpError(
            f"{output.option} {path} holds files rope-interp did not write (it has no {MARKER} "
            "file); choose a new or empty folder, or add --overwrite to write into it."
        )
    raise RopeInterpError(
        f"{output.option} {path} exists and is not {KINDS[output.kind]}; choose another path, "
        "or add --overwrite to replace it."
    )
