"""Test helpers: the tiny fixture models live in `rope_interp.testing` (examples use them too).

The suite runs on whichever TransformerLens is installed (`HOST`): tiny `HookedTransformer`s
under 3.x, tiny `TransformerBridge`s of the same geometry under 4.x. A test that builds a
`HookedTransformer` by hand, or reads what only it has, is marked `hooked_only`; one that needs
a bridge, `bridge_only`.
"""

import pytest

from rope_interp.testing import FIXTURES, HOST, make_config, make_model, random_tokens

try:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:  # TransformerLens >= 4
    HookedTransformer = HookedTransformerConfig = None

hooked_only = pytest.mark.skipif(
    HOST != "hooked",
    reason="HookedTransformer only: runs under TransformerLens 3.x (.venv-tl3)",
)
bridge_only = pytest.mark.skipif(
    HOST != "bridge", reason="TransformerBridge only: runs under TransformerLens 4.x (.venv)"
)

__all__ = [
    "FIXTURES",
    "HOST",
    "HookedTransformer",
    "HookedTransformerConfig",
    "bridge_only",
    "hooked_only",
    "make_config",
    "make_model",
    "png_size",
    "random_tokens",
    "small_word_tokenizer",
]


def small_word_tokenizer(texts, size: int = 50):
    """A word-level tokenizer of `size` ids (<unk>, <bos> and the commonest words of `texts`),
    small enough for the tiny models' vocabulary. Loaded from a folder, since TransformerLens 4
    re-loads a bridge's tokenizer by its `name_or_path`."""
    import tempfile
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    counts = Counter(w for text in texts for w in text.split())
    words = [w for w, _ in counts.most_common(size - 2)]
    vocab = {"<unk>": 0, "<bos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", unk_token="<unk>"
    )
    directory = tempfile.mkdtemp(prefix="rope-interp-test-tokenizer-")
    tokenizer.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    import struct

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])
