"""rope-interp: see and test how language models use Rotary Positional Encodings."""

__version__ = "0.1.0"
