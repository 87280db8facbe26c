"""Every exception rope-interp raises on purpose; each message says what was wrong and what to do.

All derive from `RopeInterpError` (a `ValueError`), so `except RopeInterpError` catches any
mistake rope-interp recognised, and the command line turns it into one line and exit code 2.
"""


class RopeInterpError(ValueError):
    """Bad input to rope-interp (wrong model, out-of-range index, empty corpus, ...)."""


class HooksDidNotFire(RopeInterpError):
    """A capture hook was attached but the forward pass never reached it."""


class UnsupportedBridge(RopeInterpError):
    """The bridge's architecture cannot be analysed (yet); the message names it and why."""


class UnsupportedModel(RopeInterpError):
    """The model (or one of its settings) cannot be decomposed exactly; the message says why."""


class UsageError(RopeInterpError):
    """A command-line usage mistake (argparse's own errors), reported like any other."""


class CacheDamaged(Exception):
    """A model-cache entry that does not match its manifest (internal: triggers a rebuild, never
    reaches the user)."""
