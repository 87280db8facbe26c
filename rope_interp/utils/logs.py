"""rope-interp's notes to the user, through `logging.getLogger("rope_interp")`.

The logger writes `rope-interp: message` lines to the current `sys.stderr` (so that notes show
in a terminal, a notebook and under pytest's capture alike) and does not propagate to the root
logger, as transformers does for its own. Silence it with
`logging.getLogger("rope_interp").setLevel(logging.ERROR)`, or replace its handlers.
"""

from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("rope_interp")


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever `sys.stderr` is at the time of each note."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


if not LOG.handlers:
    _handler = _CurrentStderr()
    _handler.setFormatter(logging.Formatter("rope-interp: %(message)s"))
    LOG.addHandler(_handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False


def note(message: str) -> None:
    """A one-line note to the user (a result recomputed, a cache rebuilt, ...)."""
    LOG.warning(message)
