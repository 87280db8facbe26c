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


def gguf_bytes(kvs=None, tensors=None, data=None, version=3, counts=None) -> bytes:
    """A GGUF file: by default a valid header of one Llama F32 tensor of 4 values (random
    data, so each call has another digest). `kvs`/`tensors`: records built with `gguf_kv`,
    `gguf_string`; `counts`: (tensors, keys) to claim instead of the real ones."""
    import os
    import struct

    if kvs is None:
        kvs = [
            gguf_kv("general.architecture", 8, gguf_string("llama")),
            gguf_kv("llama.block_count", 4, struct.pack("<I", 1)),
            gguf_kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
        ]
    if tensors is None:
        tensors = [gguf_string("w") + struct.pack("<IQIQ", 1, 4, 0, 0)]
    n_tensors, n_kv = counts or (len(tensors), len(kvs))
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs + tensors)
    return head + b"\0" * (-len(head) % 32) + (os.urandom(16) if data is None else data)


def gguf_string(text: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string: its length (or `length`, to lie) and its bytes."""
    import struct

    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def gguf_kv(key: str, kind: int, value: bytes) -> bytes:
    """A GGUF metadata record: key, value type, value bytes."""
    import struct

    return gguf_string(key) + struct.pack("<I", kind) + value
