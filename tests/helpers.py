"""Test helpers: the tiny fixture models live in `rope_interp.testing` (examples use them too)."""

from rope_interp.testing import FIXTURES, make_config, make_model, random_tokens

__all__ = ["FIXTURES", "make_config", "make_model", "random_tokens"]
