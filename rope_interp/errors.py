"""The exception users see for bad input; its message says what was wrong and what to do."""


class RopeInterpError(ValueError):
    """Bad input to rope-interp (wrong model, out-of-range index, empty corpus, ...)."""
