"""Test helpers: the tiny fixture models live in `rope_interp.testing` (examples use them too)."""

from rope_interp.testing import FIXTURES, make_config, make_model, random_tokens

__all__ = [
    "FIXTURES",
    "make_config",
    "make_model",
    "png_size",
    "random_tokens",
    "small_word_tokenizer",
]


def small_word_tokenizer(texts, size: int = 50):
    """A word-level tokenizer of `size` ids (<unk>, <bos> and the commonest words of `texts`),
    small enough for the tiny models' vocabulary."""
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts = Counter(w for text in texts for w in text.split())
    words = [w for w, _ in counts.most_common(size - 2)]
    vocab = {"<unk>": 0, "<bos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", unk_token="<unk>")


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    import struct

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])
