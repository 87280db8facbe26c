"""The converted-model cache checks itself, repairs itself and survives concurrent first loads.

A tiny fake source stands in for the GGUF conversion (a tiny random model and a word-level
tokenizer), so each rebuild takes milliseconds instead of half a minute. Under TransformerLens
3.x the cache holds converted HookedTransformer weights; under 4.x, the dequantized transformers
checkpoint a bridge is booted from: the same mechanism, other file names.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from rope_interp.errors import RopeInterpError
from rope_interp.loading import hf_loading, model_cache, models
from rope_interp.testing import _BASE, FIXTURES, HOST, make_model, tiny_hf_model
from tests.helpers import gguf_bytes

# The cache entry's weights file and the function that writes an entry, on each host.
WEIGHTS = "weights.safetensors" if HOST == "hooked" else "model.safetensors"
WRITER = (models, "_write_converted") if HOST == "hooked" else (hf_loading, "_write_hf_checkpoint")

TOKENS = torch.tensor([[1, 5, 7, 3, 9, 2]])


def _tokenizer():
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as token_models
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "<eos>"] + [f"w{i}" for i in range(48)])}
    tokenizer = Tokenizer(token_models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="<eos>")


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A .gguf path whose 'conversion' is a tiny model; returns (path, conversions, reference)."""
    monkeypatch.setenv("ROPE_INTERP_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "tiny.gguf"
    source.write_bytes(gguf_bytes())  # a valid header: the loader checks it first
    reference = make_model("half_full")
    cfg_dict = {k: v for k, v in {**_BASE, **FIXTURES["half_full"]}.items() if k != "device"}
    conversions = []

    def convert(path):
        conversions.append(path)
        return dict(reference.state_dict()), dict(cfg_dict), _tokenizer()

    def read_gguf(path):
        conversions.append(path)
        return tiny_hf_model("half_full"), _tokenizer()

    if HOST == "hooked":
        monkeypatch.setattr(models, "_convert_gguf", convert)
    else:
        monkeypatch.setattr(hf_loading, "read_gguf_model", read_gguf)
    return source, conversions, reference


def _entry() -> Path:
    (entry,) = [p for p in models.cache_dir().iterdir() if p.is_dir()]
    return entry


def _load(source):
    return models.load_model(str(source), device="cpu")


def test_second_load_uses_the_verified_cache(fake_source):
    source, conversions, reference = fake_source
    first = _load(source)
    second = _load(source)
    assert len(conversions) == 1
    assert torch.equal(first(TOKENS), reference(TOKENS))
    assert torch.equal(second(TOKENS), reference(TOKENS))
    model_cache.verify(_entry())  # complete: every file matches the manifest


def _truncate(entry):
    path = entry / WEIGHTS
    path.write_bytes(path.read_bytes()[:100])


def _empty(entry):
    (entry / WEIGHTS).write_bytes(b"")


def _random(entry):
    path = entry / WEIGHTS
    path.write_bytes(os.urandom(path.stat().st_size))


def _flip_data_bytes(entry):
    """Header intact, a few bytes of one tensor changed: same size, still loads."""
    path = entry / WEIGHTS
    data = bytearray(path.read_bytes())
    for offset in range(len(data) - 64, len(data) - 56):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate_config(entry):
    path = entry / "config.json"
    path.write_text(path.read_text()[:20])


def _empty_tokenizer(entry):
    for path in (entry / "tokenizer").iterdir():
        path.unlink()


def _no_manifest(entry):
    (entry / model_cache.MANIFEST).unlink()


def _garbage_manifest(entry):
    (entry / model_cache.MANIFEST).write_bytes(b"\x00\xff garbage")


DAMAGE = [
    _truncate,
    _empty,
    _random,
    _flip_data_bytes,
    _truncate_config,
    _empty_tokenizer,
    _no_manifest,
    _garbage_manifest,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_damaged_cache_is_rebuilt_with_one_line(fake_source, damage, capsys):
    source, conversions, reference = fake_source
    _load(source)
    damage(_entry())
    capsys.readouterr()
    model = _load(source)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(conversions) == 2
    assert len(err) == 1 and "damaged" in err[0] and "rebuilding" in err[0], err
    assert torch.equal(model(TOKENS), reference(TOKENS))
    model_cache.verify(_entry())
    # Nothing left over: the entry and its lock file only.
    assert sorted(p.name for p in models.cache_dir().iterdir()) == sorted(
        [_entry().name, _entry().name + ".lock"]
    )
    _load(source)
    assert len(conversions) == 2  # repaired for good


def test_entry_that_verifies_but_cannot_be_read_is_rebuilt(fake_source, capsys):
    source, conversions, reference = fake_source
    _load(source)
    entry = _entry()
    (entry / "config.json").write_text("{not json")
    model_cache.write_manifest(entry)  # the manifest now agrees with the broken file
    capsys.readouterr()
    model = _load(source)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be read" in err[0], err
    assert len(conversions) == 2
    assert torch.equal(model(TOKENS), reference(TOKENS))


def test_full_disk_while_building_leaves_no_entry_and_no_orphans(fake_source, monkeypatch):
    source, conversions, _ = fake_source

    def full_disk(path, folder):
        (folder / WEIGHTS).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(*WRITER, full_disk)
    with pytest.raises(OSError, match="No space left"):
        _load(source)
    assert [p.name for p in models.cache_dir().iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()


def test_concurrent_first_loads_convert_once(fake_source):
    """Three threads load at once: one conversion, equal models, and torch's init functions
    intact afterwards (transformers swaps them for no-ops while it builds a model; two builds
    at once once left the no-ops in place, and every later model with garbage weights)."""
    source, conversions, reference = fake_source
    results, errors = [], []
    inits = {name: getattr(torch.nn.init, name) for name in ("normal_", "kaiming_uniform_")}

    def load():
        try:
            results.append(_load(source)(TOKENS))
        except Exception as error:  # noqa: BLE001 (collected and asserted on below)
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(conversions) == 1
    expected = reference(TOKENS)
    assert all(torch.equal(r, expected) for r in results)
    assert {name: getattr(torch.nn.init, name) for name in inits} == inits


_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from rope_interp.loading import model_cache
    root, counter = Path(sys.argv[1]), Path(sys.argv[2])

    def build(folder):
        with open(counter, "a") as handle:
            handle.write("built\\n")
        time.sleep(0.5)  # a slow conversion: the others must wait, not collide
        (folder / "data.bin").write_bytes(bytes(range(256)) * 100)

    entry = model_cache.cached_entry(root, "key", build, source="test", required=("data.bin",))
    assert (entry / "data.bin").read_bytes() == bytes(range(256)) * 100
    """
)


def test_three_processes_fill_an_empty_cache_at_once(tmp_path):
    root, counter = tmp_path / "cache", tmp_path / "builds.txt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(root), str(counter)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(w.wait(timeout=120), w.stderr.read()) for w in workers]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    assert counter.read_text().splitlines() == ["built"]
    assert sorted(p.name for p in root.iterdir()) == ["key-c1", "key-c1.lock"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "is empty"), (b"hello, this is text\n", "not a GGUF file")],
)
def test_text_or_empty_file_given_as_gguf(tmp_path, content, expected):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(RopeInterpError, match=expected):
        models.load_model(str(path), device="cpu")
