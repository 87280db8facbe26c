"""The bad-input matrix: every command × a table of mistakes, through the real entry point.

Each mistake must end in exit code 2 with exactly one line on stderr (no traceback), leave
every file in the working folder as it was, and, since each is a mistake in the arguments,
be caught before the model is loaded (the loaders are replaced by ones that fail loudly). A
case that blocks (a FIFO opened) fails after `HANG_SECONDS` instead of hanging the suite.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rope_interp import cli
from rope_interp.cli import loading
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.ablation import Intervention
from rope_interp.interventions.selection import select_band
from rope_interp.loading import models
from rope_interp.utils.files import special_kind
from tests.helpers import gguf_bytes, gguf_kv, gguf_string, make_model


def _safetensors(header: dict, data: bytes) -> bytes:
    """The bytes of a safetensors file: header length, JSON header, data."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


TINY_SAFETENSORS = _safetensors(
    {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8
)

# Files and folders every case can point at (created in the working folder before each case).
SETUP = {
    "notes.txt": b"some text for a corpus\n",
    "empty.txt": b"",
    "text.gguf": b"this is not a model\n",
    "empty.gguf": b"",
    "previous.csv": b"a,b\n1,2\n",
    "a_file": b"x",
    # the user's own files where rope-interp could be told to write
    "corpus.csv": b"a corpus that happens to be named .csv\n",
    "res_heads.csv": b"a corpus named like a per-head table\n",
    "page.html": b"<html><body>the user's own page</body></html>\n",
    "user.safetensors": b"not a statistics file\n",
    "res2_heads.csv": b"x,y\n3,4\n",
    "texts/a.txt": b"text in a folder\n",
    "my_tables/notes.md": b"the user's notes\n",
    "ckpt/config.json": b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}\n',
    "ckpt/model.safetensors": TINY_SAFETENSORS,
}
SETUP_DIRS = ("corpus_dir", "folder.gguf", "folder.html", "folder.csv")
SETUP_LINKS = {"corpus_link.csv": "corpus.csv", "st_link.safetensors": "user.safetensors"}
SETUP_HARD_LINKS = {"corpus_hard.csv": "corpus.csv"}
# FIFOs: opening one for reading blocks until a writer comes, i.e. forever here.
SETUP_FIFOS = ("pipe.gguf", "pipe.txt", "pipe.safetensors", "pipe.html")
HANG_SECONDS = 60
UNWRITABLE = "/proc/rope-interp-test"  # no file can be created under /proc, root or not

# Mistakes every model-running command shares: (arguments, what the one line must contain).
COMMON = [
    (["--tokens", "0"], "--tokens"),
    (["--tokens", "-5"], "--tokens"),
    (["--tokens", "many"], "--tokens"),
    (["--seq-len", "0"], "--seq-len"),
    (["--seq-len", "1"], "--seq-len"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    (["--dtype", "int8"], "--dtype 'int8'"),
    (["--dtype", "float"], "--dtype"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--device", "cuda:banana"], "--device"),
    (["--model", "no-such-model"], "--model: Unknown model 'no-such-model'"),
    (["--model", "text.gguf"], "not a GGUF file"),
    (["--model", "empty.gguf"], "is empty"),
    (["--model", "missing.gguf"], "GGUF file not found"),
    (["--model", "folder.gguf"], "is a directory"),
    (["--corpus", "corpus_dir"], "is a directory"),
    (["--corpus", "missing/*.txt"], "No file matches"),
    (["--corpus", "empty.txt"], "empty"),
    (["--model", "pipe.gguf"], "GGUF file pipe.gguf is a FIFO"),
    (["--corpus", "pipe.txt"], "Corpus file pipe.txt is a FIFO"),
    (["--corpus", "*.txt"], "Corpus file pipe.txt is a FIFO"),
    (["--no-such-option"], "unrecognized arguments"),
]
if not torch.cuda.is_available():
    COMMON.append((["--device", "cuda"], "no CUDA GPU"))

# Each command's own required arguments (valid) and its own mistakes.
COMMANDS = {
    "report": (
        ["--out", "r.html", "--quiet"],
        [
            (["--out", "report.pdf"], "--out must end in .html"),
            (["--out", "folder.html"], "is a directory"),
            (["--out", "a_file/r.html"], "is a file"),
            (["--out", f"{UNWRITABLE}/r.html"], "cannot be written"),
            (["--save-tables", "a_file"], "--save-tables"),
            (["--save-tables", f"{UNWRITABLE}/tables"], "--save-tables"),
            (["--corpus", "page.html", "--out", "page.html"], "same file as --corpus page.html"),
            (["--corpus", "texts/a.txt", "--save-tables", "texts"], "a folder holding --corpus"),
            (["--model", "ckpt", "--save-tables", "ckpt"], "same file as --model ckpt"),
            (["--model", "ckpt", "--out", "ckpt/r.html"], "inside --model ckpt"),
            (["--out", "page.html"], "page.html exists and is not a rope-interp HTML report"),
            (["--out", "page.html", "--overwrite", "--corpus", "page.html"], "same file as"),
            (["--save-tables", "my_tables"], "holds files rope-interp did not write"),
            (["--out", "pipe.html"], "--out pipe.html is a FIFO"),
            (["--out", "pipe.html", "--overwrite"], "--out pipe.html is a FIFO"),
            (["--sections", "usage,nope"], "Unknown report section"),
            (["--bootstrap", "0"], "--bootstrap"),
            (["--ablation-tokens", "0"], "--ablation-tokens"),
            (["--analysis-tokens", "-1"], "--analysis-tokens"),
        ],
    ),
    "ablate": (
        ["--out", "ab.csv", "--quiet"],
        [
            (["--out", "ab.txt"], "--out must end in .csv or .parquet"),
            (["--out", "folder.csv"], "is a directory"),
            (["--out", "a_file/ab.csv"], "is a file"),
            (["--out", f"{UNWRITABLE}/ab.csv"], "cannot be written"),
            (["--run-dir", "a_file"], "--run-dir"),
            (["--run-dir", f"{UNWRITABLE}/runs"], "--run-dir"),
            (["--corpus", "corpus.csv", "--out", "corpus.csv"], "same file as --corpus"),
            (["--corpus", "res_heads.csv", "--out", "res.csv"], "per-head table) res_heads.csv"),
            (["--corpus", "texts/*.txt", "--run-dir", "texts"], "a folder holding --corpus"),
            (["--out", "previous.csv"], "is not a rope-interp ablation table"),
            (["--out", "res2.csv"], "res2_heads.csv exists and is not a rope-interp per-head"),
            (["--run-dir", "my_tables"], "--run-dir my_tables holds files rope-interp did not"),
            (["--sweep", ""], "--sweep '' names no group"),
            (["--sweep", " , "], "names no group"),
            (["--sweep", "bands"], "Unknown ablation group"),
            (["--phi", "nan"], "--phi"),
            (["--phi", "inf"], "--phi"),
            (["--phi", "-inf"], "--phi"),
            (["--phi", "1e999"], "--phi"),
            (["--phi", "9**9**9"], "--phi"),
            (["--phi", "__import__('os')"], "--phi"),
            (["--phi", "pi/0"], "--phi"),
            (["--p", "2"], "--p values must lie in [0, 1]"),
            (["--p", "nan"], "--p"),
            (["--random-controls", "-2"], "--random-controls"),
            (["--bootstrap", "0"], "--bootstrap"),
            (["--fraction", "0"], "--fraction"),
            (["--fraction", "0.9"], "--fraction"),
        ],
    ),
    "stats": (
        ["--out", "st.csv"],
        [
            (["--out", "st.txt"], "--out must end in .safetensors"),
            (["--out", "folder.csv"], "is a directory"),
            (["--out", "a_file/st.csv"], "is a file"),
            (["--out", f"{UNWRITABLE}/st.csv"], "cannot be written"),
            (["--corpus", "corpus.csv", "--out", "corpus.csv"], "same file as --corpus"),
            (["--corpus", "corpus.csv", "--out", "corpus_link.csv"], "same file as --corpus"),
            (["--corpus", "corpus_link.csv", "--out", "corpus_hard.csv"], "same file as"),
            (["--corpus", "c*.csv", "--out", "corpus_hard.csv", "--overwrite"], "same file"),
            (["--model", "ckpt", "--out", "ckpt/model.safetensors"], "inside --model ckpt"),
            (["--out", "previous.csv"], "is not a rope-interp statistics table"),
            (["--out", "user.safetensors"], "is not a rope-interp statistics file"),
            (["--shard", "3/2"], "--shard i/N needs N ≥ 1 and 0 ≤ i < N"),
            (["--shard", "first"], "--shard takes i/N"),
            (["--tokens", "1.5"], "--tokens must be a whole number"),
        ],
    ),
    "summary": ([], []),
}
# `merge` runs no model: its own table (OUT, then the input files).
MERGE = [
    (["merge", "m.csv", "notes.txt", "notes.txt"], "merge writes .safetensors"),
    (["merge", f"{UNWRITABLE}/m.safetensors", "a", "b"], "cannot be written"),
    (["merge", "m.safetensors", "notes.txt"], "at least two statistics files"),
    (["merge", "m.safetensors", "missing.safetensors", "notes.txt"], "No statistics file"),
    (["merge", "m.safetensors", "notes.txt", "a_file"], "is not a readable statistics file"),
    (["merge", "m.safetensors", "notes.txt", "notes.txt"], "has the same content as input"),
    (["merge", "m.safetensors", "corpus.csv", "corpus_hard.csv"], "has the same content as"),
    (["merge", "m.safetensors", "pipe.safetensors", "notes.txt"], "pipe.safetensors is a FIFO"),
    (["merge", "m.safetensors", "notes.txt", "pipe.safetensors"], "pipe.safetensors is a FIFO"),
    (["merge", "m.safetensors", "texts", "notes.txt"], "texts is a directory"),
    (["merge", "user.safetensors", "a", "b"], "is not a rope-interp statistics file"),
    (["merge", "st_link.safetensors", "user.safetensors", "b"], "same file as IN"),
    (["merge", "pipe.safetensors", "a", "b"], "OUT pipe.safetensors is a FIFO"),
]
# Mistakes in the command line itself (no command, unknown command, missing required option).
TOP_LEVEL = [
    ([], "required"),
    (["explain"], "invalid choice"),
    (["ablate"], "--out"),
    (["stats"], "--out"),
]


def _cases():
    for command, (required, own) in COMMANDS.items():
        for extra, expected in COMMON + own:
            yield pytest.param([command, *required, *extra], expected, id=f"{command} {extra}")
    for argv, expected in MERGE:
        yield pytest.param(argv, expected, id=f"merge {argv[1:]}")
    for argv, expected in TOP_LEVEL:
        yield pytest.param(argv, expected, id=f"top {argv}")


CASES = list(_cases())


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` → a digest of its content ('dir', 'fifo'; a link,
    its target too, unfollowed when it is a loop, dangling or a device)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            key += f" -> {os.readlink(path)}"
            if not path.exists() or special_kind(path):  # a loop, dangling, a device
                out[key] = "link"
                continue
        if path.is_dir():
            out[key] = "dir"
        elif stat.S_ISFIFO(path.stat().st_mode):
            out[key] = "fifo"
        else:
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class Hang(BaseException):
    """A case blocked (not an `Exception`, so that nothing on the way catches it)."""


@pytest.fixture
def no_hang():
    """Fail a test that blocks for `HANG_SECONDS` (SIGALRM interrupts a blocking open)."""

    def alarm(signum, frame):
        raise Hang(f"blocked for {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder with the files the cases name, and loaders that must not be called."""
    for name, content in SETUP.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(content)
    for name in SETUP_DIRS:
        (tmp_path / name).mkdir()
    for name, target in SETUP_LINKS.items():
        (tmp_path / name).symlink_to(target)
    for name, target in SETUP_HARD_LINKS.items():
        os.link(tmp_path / target, tmp_path / name)
    for name in SETUP_FIFOS:
        os.mkfifo(tmp_path / name)
    monkeypatch.chdir(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded although the arguments were wrong")

    monkeypatch.setattr(loading, "load_model_and_corpus", never)
    monkeypatch.setattr(models, "load_model", never)
    monkeypatch.setattr(models, "load_gguf", never)
    return tmp_path


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_mistake_is_one_line_exit_2_and_changes_nothing(workdir, no_hang, capsys, argv, expected):
    before = _snapshot(workdir)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("rope-interp: error: "), lines
    assert expected in lines[0], lines
    assert "Traceback" not in captured.err and captured.out == ""
    assert _snapshot(workdir) == before


def test_matrix_covers_every_command():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(COMMANDS) | {"merge"}
    assert len(CASES) >= 4 * len(COMMON)  # every command gets the shared mistakes


def test_unknown_model_is_one_short_line(workdir, capsys):
    assert cli.main(["summary", "--model", "gpt-17"]) == 2
    line = capsys.readouterr().err.strip()
    assert "Unknown model 'gpt-17'" in line and len(line) < 400  # not TransformerLens's 8 KB list


@pytest.mark.parametrize(
    "argv",
    [
        ["ablate", "--out", "ab.csv", "--phi", "nan"],
        ["stats", "--out", f"{UNWRITABLE}/st.csv"],
        ["summary", "--model", "no-such-model"],
    ],
    ids=["ablate-phi-nan", "stats-unwritable", "summary-unknown-model"],
)
def test_mistake_through_a_real_process(tmp_path, argv):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "ROPE_INTERP_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "rope_interp.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rope-interp: error: "), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the cache folder


@pytest.mark.parametrize("phi", [math.nan, math.inf, -math.inf])
def test_api_refuses_a_phase_that_is_not_a_finite_number(phi):
    model = make_model("half_full")
    spec = RotarySpec.from_model(model)
    with pytest.raises(RopeInterpError, match="phi must be a finite angle"):
        Intervention(model, select_band(spec, "high", k=1), mode="phase", phi=phi)


@pytest.mark.parametrize(
    ("model", "hint"),
    [
        ("smollm2-135m", "Check that the cache folder"),
        ("gpt2", "Offline, use the built-in 'smollm2-135m'"),
    ],
)
def test_load_failure_hint_fits_the_model(tmp_path, monkeypatch, capsys, model, hint):
    """A cache that cannot be written is not solved by 'use the built-in model'."""
    monkeypatch.chdir(tmp_path)

    def unwritable(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied", "/cache/x")

    monkeypatch.setattr(models, "load_model", unwritable)
    assert cli.main(["summary", "--model", model]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert hint in line
    if model == "smollm2-135m":
        assert "use the built-in" not in line


# ---- the user's files: inputs given twice, FIFOs, outputs rope-interp did not write -----------
def test_fifo_model_fails_at_once_in_a_real_process(tmp_path):
    """A FIFO named like a GGUF file: one line and exit 2, not a read that waits forever."""
    os.mkfifo(tmp_path / "model.gguf")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "ROPE_INTERP_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rope_interp.cli", "summary", "--model", "model.gguf"],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,  # a hang fails here instead of blocking the suite
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "GGUF file model.gguf is a FIFO (named pipe), not a regular file" in line
    assert time.monotonic() - started < HANG_SECONDS


def _stats_file(path: Path, seed: int) -> Path:
    """A small real statistics file (a tiny model on random tokens)."""
    from rope_interp.core.stats import collect_pair_stats
    from tests.helpers import random_tokens

    model = make_model("gqa")
    collect_pair_stats(model, [random_tokens(model, 2, 8, seed=seed)], progress=False).save(path)
    return path


def test_merge_refuses_an_input_given_twice_by_content(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _stats_file(tmp_path / "a.safetensors", seed=0)
    _stats_file(tmp_path / "c.safetensors", seed=1)
    shutil.copy(tmp_path / "a.safetensors", tmp_path / "b.safetensors")  # a copy, another name
    before = _snapshot(tmp_path)
    for inputs, first, second in (
        (["a.safetensors", "a.safetensors"], "a.safetensors", "a.safetensors"),
        (["a.safetensors", "c.safetensors", "b.safetensors"], "b.safetensors", "a.safetensors"),
    ):
        assert cli.main(["merge", "m.safetensors", *inputs]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"input {first} has the same content as input {second}" in line
        assert _snapshot(tmp_path) == before  # nothing written, nothing changed
    assert cli.main(["merge", "m.safetensors", "a.safetensors", "c.safetensors"]) == 0
    assert "32 tokens from 2 files" in capsys.readouterr().out


def test_rope_interp_writes_over_its_own_outputs_and_others_only_when_told(
    tiny, tmp_path, monkeypatch, capsys
):
    """Re-running a command replaces what it wrote; a user's file is replaced only with
    --overwrite, and an input never."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.csv").write_bytes(b"a,b\n1,2\n")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "notes.md").write_bytes(b"notes\n")
    stats = ["stats", "--tokens", "64", "--seq-len", "16", "--out"]
    for out in ("st.csv", "st.parquet", "st.safetensors"):
        assert cli.main([*stats, out]) == 0 and cli.main([*stats, out]) == 0, out
    assert cli.main([*stats, "mine.csv"]) == 2
    assert "mine.csv exists and is not a rope-interp statistics table" in capsys.readouterr().err
    assert (tmp_path / "mine.csv").read_bytes() == b"a,b\n1,2\n"
    assert cli.main([*stats, "mine.csv", "--overwrite"]) == 0
    assert (tmp_path / "mine.csv").read_text().startswith("kind,layer,head,pair")
    report = ["report", "--tokens", "64", "--seq-len", "32", "--ablation-tokens", "32",
              "--sections", "geometry", "--quiet", "--save-tables", "tables"]  # fmt: skip
    assert cli.main(report) == 2  # the user's folder
    assert cli.main([*report, "--overwrite"]) == 0
    assert (tmp_path / "tables" / ".rope-interp").is_file()
    assert (tmp_path / "tables" / "notes.md").read_bytes() == b"notes\n"
    assert cli.main(report) == 0  # now marked, and out/report.html is rope-interp's
    capsys.readouterr()


def test_special_files_are_refused_before_they_are_opened(tmp_path):
    from rope_interp.utils.files import check_regular_file

    os.mkfifo(tmp_path / "pipe")
    for path, kind in ((tmp_path / "pipe", "a FIFO"), (Path("/dev/null"), "a character device")):
        with pytest.raises(RopeInterpError, match=f"is {kind}"):
            check_regular_file(path, "Input")
    with pytest.raises(RopeInterpError, match="does not exist"):
        check_regular_file(tmp_path / "missing", "Input")


# ---- damaged or hostile model files: one line, before any library reads them -----------------
_gstr, _gkv, _gguf = gguf_string, gguf_kv, gguf_bytes


_LLAMA = _gkv("general.architecture", 8, _gstr("llama"))
GGUF_CASES = {
    "valid_but_truncated.gguf": (_gguf()[:-8], "truncated or damaged: tensor 'w' ends at"),
    "header_only.gguf": (b"GGUF" + struct.pack("<I", 3), "shorter than a GGUF header"),
    "version99.gguf": (_gguf(version=99), "GGUF version 99"),
    "many_tensors.gguf": (_gguf(counts=(2**62, 3)), "claims 4611686018427387904 tensors"),
    "many_keys.gguf": (_gguf(counts=(1, 2**60)), "metadata keys, more than"),
    "long_key.gguf": (_gguf(kvs=[_gstr("k", 2**40)]), "claims a length of 1099511627776"),
    "long_value.gguf": (_gguf(kvs=[_gkv("k", 8, _gstr("v", 2**33))]), "claims a length"),
    "big_array.gguf": (
        _gguf(kvs=[_gkv("k", 9, struct.pack("<IQ", 4, 2**60))]),
        "more than the",
    ),
    "many_strings.gguf": (
        _gguf(kvs=[_gkv("k", 9, struct.pack("<IQ", 8, 2**60))]),
        "claims 1152921504606846976 items",
    ),
    "bad_value_type.gguf": (_gguf(kvs=[_gkv("k", 77, b"")]), "value type 77"),
    "bad_tensor_type.gguf": (
        _gguf(tensors=[_gstr("w") + struct.pack("<IQIQ", 1, 4, 999, 0)]),
        "data type 999",
    ),
    "nine_dims.gguf": (_gguf(tensors=[_gstr("w") + struct.pack("<I", 9)]), "9 dimensions"),
    "no_tensors.gguf": (_gguf(tensors=[]), "holds no tensors"),
    "theta0.gguf": (
        _gguf(kvs=[_LLAMA, _gkv("llama.rope.freq_base", 6, struct.pack("<f", 0.0))]),
        "llama.rope.freq_base = 0.0 is invalid",
    ),
    "theta_nan.gguf": (
        _gguf(kvs=[_LLAMA, _gkv("llama.rope.freq_base", 6, struct.pack("<f", math.nan))]),
        "llama.rope.freq_base = nan is invalid",
    ),
    "no_layers.gguf": (
        _gguf(kvs=[_LLAMA, _gkv("llama.block_count", 4, struct.pack("<I", 0))]),
        "llama.block_count = 0 is invalid",
    ),
    "no_architecture.gguf": (_gguf(kvs=[]), "names no model"),
    "modèle ✓.gguf": (b"\x00" * 64, "not a GGUF file"),
}

_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4}
_F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
_WEIGHTS = {  # model.safetensors variants: (bytes, what the one line says)
    "empty": (b"", "it has 0 bytes, fewer than a header"),
    "long_header": (struct.pack("<Q", 2**40) + b"{}", "its header claims 1099511627776 bytes"),
    "not_json": (struct.pack("<Q", 4) + b"\xff{x}", "its header is not JSON"),
    "header_list": (_safetensors([1], b""), "not a JSON object"),
    "past_end": (
        _safetensors({"w": {**_F32x2, "data_offsets": [0, 10**12]}}, b"\0" * 8),
        "ends at data byte 1000000000000",
    ),
    "truncated": (TINY_SAFETENSORS[:-4], "ends at data byte 8, past the 4 bytes"),
    "wrong_size": (
        _safetensors({"w": {**_F32x2, "shape": [3]}}, b"\0" * 8),
        "has 8 bytes for shape [3]",
    ),
    "gap": (
        _safetensors({"w": {**_F32x2, "data_offsets": [4, 12]}}, b"\0" * 12),
        "overlap or leave gaps",
    ),
    "extra_bytes": (_safetensors({"w": _F32x2}, b"\0" * 12), "hold 8 bytes but the file has 12"),
    "bad_dtype": (_safetensors({"w": {**_F32x2, "dtype": "Q7"}}, b"\0" * 8), "dtype 'Q7'"),
    "neg_shape": (_safetensors({"w": {**_F32x2, "shape": [-2]}}, b"\0" * 8), "invalid shape"),
    "bad_metadata": (
        _safetensors({"__metadata__": {"a": 1}, "w": _F32x2}, b"\0" * 8),
        "__metadata__ must map",
    ),
}
_FIELDS = {  # config.json changes: (change, what the one line says)
    "theta_zero": ({"rope_theta": 0}, "config field rope_theta = 0 is invalid"),
    "theta_negative": ({"rope_theta": -1e4}, "config field rope_theta = -10000.0 is invalid"),
    "theta_string": ({"rope_theta": "1e4"}, "config field rope_theta = '1e4' is invalid"),
    "theta_nan": ({"rope_theta": math.nan}, "config field rope_theta = nan is invalid"),
    "theta_bool": ({"rope_theta": True}, "config field rope_theta = True is invalid"),
    "params_theta": (
        {"rope_parameters": {"rope_type": "default", "rope_theta": 0.0}},
        "config field rope_parameters.rope_theta = 0.0",
    ),
    "params_string": ({"rope_scaling": "yes"}, "config field rope_scaling = 'yes'"),
    "gemma3_local_theta": (
        {"rope_parameters": {"sliding_attention": {"rope_theta": -1}}},
        "rope_parameters.sliding_attention.rope_theta = -1",
    ),
    "scaling_factor": (
        {"rope_scaling": {"rope_type": "linear", "factor": 0}},
        "rope_scaling.factor = 0",
    ),
    "hidden_string": ({"hidden_size": "64"}, "config field hidden_size = '64'"),
    "heads_zero": ({"num_attention_heads": 0}, "config field num_attention_heads = 0"),
    "layers_negative": ({"num_hidden_layers": -1}, "config field num_hidden_layers = -1"),
    "kv_not_divisor": (
        {"hidden_size": 8, "num_attention_heads": 4, "num_key_value_heads": 3},
        "num_key_value_heads = 3 is invalid; it must be a divisor of",
    ),
    "partial_rotary": ({"partial_rotary_factor": 1.5}, "partial_rotary_factor = 1.5"),
    "architectures_string": ({"architectures": "LlamaForCausalLM"}, "config field architectures"),
    "no_model_type": ({"model_type": None}, "has no model_type"),
    "layer_types": (
        {"num_hidden_layers": 2, "layer_types": ["full_attention"]},
        "config field layer_types",
    ),
    "huge_vocab": (
        {"vocab_size": 10**12},
        "describes a model of at least 4000000000000 parameters, more than the",
    ),
}


def _checkpoint(folder: Path, config: bytes | None = None, weights: bytes | None = None) -> None:
    folder.mkdir()
    default = json.dumps(_CONFIG).encode()
    (folder / "config.json").write_bytes(default if config is None else config)
    (folder / "model.safetensors").write_bytes(TINY_SAFETENSORS if weights is None else weights)


def _model_cases(root: Path) -> list[tuple[str, str]]:
    """Write every damaged model under `root`: [(--model value, what the line says)]."""
    cases = []
    for name, (data, expected) in GGUF_CASES.items():
        (root / name).write_bytes(data)
        cases.append((name, expected))
    for name, (data, expected) in _WEIGHTS.items():
        _checkpoint(root / f"w_{name}", weights=data)
        cases.append((f"w_{name}", expected))
    for name, (change, expected) in _FIELDS.items():
        config = {k: v for k, v in {**_CONFIG, **change}.items() if v is not None}
        _checkpoint(root / f"c_{name}", config=json.dumps(config).encode())
        cases.append((f"c_{name}", expected))
    configs = {
        "c_not_json": (b"{not json", "config.json is not valid JSON"),
        "c_list": (b"[1, 2]", "holds a JSON list, not an object"),
        "c_latin1": (b'{"model_type": "\xe9"}', "is not valid JSON"),
        "c_deep": (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    }
    for name, (data, expected) in configs.items():
        _checkpoint(root / name, config=data)
        cases.append((name, expected))
    _checkpoint(root / "pickle_only")
    (root / "pickle_only" / "model.safetensors").unlink()
    (root / "pickle_only" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    cases.append(("pickle_only", "holds pickled weights only (pytorch_model.bin)"))
    _checkpoint(root / "no_weights")
    (root / "no_weights" / "model.safetensors").unlink()
    cases.append(("no_weights", "has no weights"))
    _checkpoint(root / "bad_index")
    (root / "bad_index" / "model.safetensors.index.json").write_text('{"weight_map": {"w": 3}}')
    cases.append(("bad_index", "has no valid weight_map"))
    _checkpoint(root / "index_missing_file")
    (root / "index_missing_file" / "model.safetensors.index.json").write_text(
        '{"weight_map": {"w": "model-00001-of-00002.safetensors"}}'
    )
    cases.append(("index_missing_file", "model-00001-of-00002.safetensors does not exist"))
    for name, entry in (("fifo_config", "config.json"), ("fifo_weights", "model.safetensors")):
        _checkpoint(root / name)
        (root / name / entry).unlink()
        os.mkfifo(root / name / entry)
        cases.append((name, f"{entry} in checkpoint folder {name} is a FIFO"))
    _checkpoint(root / "fifo_tokenizer")
    os.mkfifo(root / "fifo_tokenizer" / "tokenizer.json")
    cases.append(("fifo_tokenizer", "tokenizer.json in checkpoint folder fifo_tokenizer is a FIFO"))
    _checkpoint(root / "device_inside")
    (root / "device_inside" / "vocab.json").symlink_to("/dev/zero")
    cases.append(("device_inside", "vocab.json in checkpoint folder device_inside is a character"))
    _checkpoint(root / "config_loop")
    (root / "config_loop" / "config.json").unlink()
    (root / "config_loop" / "config.json").symlink_to("config.json")
    cases.append(("config_loop", "config.json in checkpoint folder config_loop is a broken"))
    (root / "loop.gguf").symlink_to("loop.gguf")
    cases.append(("loop.gguf", "loop.gguf is a broken symbolic link (or a loop of links)"))
    (root / "dangling.gguf").symlink_to("nowhere.gguf")
    cases.append(("dangling.gguf", "dangling.gguf is a broken symbolic link"))
    cases.append(("/dev/zero.gguf", "GGUF file not found"))
    (root / "zero.gguf").symlink_to("/dev/zero")
    cases.append(("zero.gguf", "zero.gguf is a character device"))
    return cases


_MODEL_IDS = [*GGUF_CASES, *(f"w_{n}" for n in _WEIGHTS), *(f"c_{n}" for n in _FIELDS)]


@pytest.fixture
def model_cases(workdir):
    return dict(_model_cases(workdir))


def test_every_damaged_model_is_one_line_before_loading(model_cases, workdir, no_hang, capsys):
    """~70 damaged, lying or hostile model files and folders through `summary --model`: each
    one line naming the file and what is wrong, exit 2, nothing changed, nothing loaded."""
    assert set(_MODEL_IDS) <= set(model_cases)
    before = _snapshot(workdir)
    wrong = []
    for model, expected in model_cases.items():
        code = cli.main(["summary", "--model", model])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        if not (code == 2 and len(lines) == 1 and expected in lines[0] and not captured.out):
            wrong.append((model, code, lines))
    assert wrong == []
    assert _snapshot(workdir) == before


def test_the_checks_accept_valid_files(tmp_path):
    """The checks are not refusing everything: a valid GGUF header, safetensors file and
    checkpoint folder pass, and the GGUF metadata is read right."""
    from rope_interp.loading.model_files import check_checkpoint_dir, check_gguf, check_safetensors

    (tmp_path / "ok.gguf").write_bytes(_gguf())
    meta = check_gguf(tmp_path / "ok.gguf")  # (random data: any 16 bytes are 4 floats)
    assert meta == {
        "general.architecture": "llama",
        "llama.block_count": 1,
        "llama.rope.freq_base": 10000.0,
    }
    (tmp_path / "ok.safetensors").write_bytes(TINY_SAFETENSORS)
    assert check_safetensors(tmp_path / "ok.safetensors")["w"]["shape"] == [2]
    _checkpoint(tmp_path / "ckpt")
    assert check_checkpoint_dir(tmp_path / "ckpt") == _CONFIG


def test_builtin_gguf_passes_and_its_header_check_is_cheap():
    from rope_interp.loading.model_files import check_gguf

    path = models.builtin_gguf_path()
    started = time.perf_counter()
    meta = check_gguf(path)
    assert time.perf_counter() - started < 5  # ~0.2 s: the header only, mapped
    assert meta["llama.rope.freq_base"] == 100000.0 and meta["llama.block_count"] == 30


@pytest.mark.parametrize("entry", ["config.json", "model.safetensors"])
def test_fifo_in_a_checkpoint_folder_fails_at_once_in_a_real_process(tmp_path, entry):
    """Nothing patched: a FIFO inside a checkpoint folder is refused, not opened."""
    _checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / entry).unlink()
    os.mkfifo(tmp_path / "ckpt" / entry)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "ROPE_INTERP_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "rope_interp.cli", "summary", "--model", "ckpt"],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{entry} in checkpoint folder ckpt is a FIFO" in line


def test_truncated_builtin_gguf_is_one_line_through_load_model(tmp_path, monkeypatch):
    """The API path checks too (not only the command line), and writes no cache entry."""
    half = models.builtin_gguf_path().read_bytes()
    (tmp_path / "half.gguf").write_bytes(half[: len(half) // 2])
    monkeypatch.setenv("ROPE_INTERP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RopeInterpError, match="half.gguf is truncated or damaged: tensor"):
        models.load_model(str(tmp_path / "half.gguf"), device="cpu")
    assert not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory):
    from rope_interp.testing.family_check import build_checkpoint, families

    (llama,) = [f for f in families() if f.name == "Llama"]
    return build_checkpoint(llama, tmp_path_factory.mktemp("llama") / "ckpt")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 0}}, "rope_theta = 0"),
        ({"intermediate_size": 100}, "could not be loaded"),  # passes the checks; the library
    ],
    ids=["theta-zero", "shapes-disagree"],
)
def test_real_checkpoint_edits_are_one_error_through_load_model(
    llama_checkpoint, tmp_path, change, expected
):
    """A real checkpoint whose config was edited: an invalid θ names the config field (not a
    frequency mismatch after loading); weights of other shapes than the config's are the
    library's refusal, as one `RopeInterpError`."""
    from rope_interp.testing.family_check import edited_checkpoint

    edited = edited_checkpoint(llama_checkpoint, tmp_path / "edited", **change)
    with pytest.raises(RopeInterpError, match=expected) as caught:
        models.load_model(str(edited), device="cpu")
    assert "edited in place" not in str(caught.value)


# ---- arguments: ranges, model-dependent options, outputs against each other -------------------
ARGUMENT_CASES = [
    (["summary", "--seed", str(2**32)], "--seed must be an integer in [0, 4294967295]"),
    (["summary", "--n-ctx", "0"], "--n-ctx must be an integer ≥ 2"),
    (["summary", "--n-devices", "0"], "--n-devices must be an integer ≥ 1"),
    (["summary", "--n-ctx", "512"], "--n-ctx and --n-devices apply to checkpoint folders"),
    (["summary", "--model", "ckpt", "--n-ctx", "64"], "--seq-len 256 does not fit in --n-ctx 64"),
    (["summary", "--model", "ckpt", "--n-devices", "2", "--device", "cpu"], "not cpu"),
    (["report", "--bootstrap", str(10**7)], "--bootstrap must be an integer in [1, 1000000]"),
    (["ablate", "--out", "a.csv", "--random-controls", "99999"], "--random-controls must be"),
    (["report", "--out", "x.html", "--save-tables", "x.html"], "the same path as"),
    (["report", "--out", "x.html", "--figures", "x.html/figs"], "inside, or holding,"),
    (["ablate", "--out", "a.csv", "--run-dir", "a.csv"], "the same path as"),
    (["ablate", "--out", "a.csv", "--run-dir", "a_heads.csv"], "the same path as"),
    (["ablate", "--out", "a.csv", "--run-dir", "./a.csv/runs"], "inside, or holding,"),
    (["stats", "--out", "s.csv", "--shard", "0/0"], "--shard"),
    (["stats", "--out", "s.csv", "--tokens", "-5"], "--tokens"),
]


@pytest.mark.parametrize(
    ("argv", "expected"), ARGUMENT_CASES, ids=[" ".join(a) for a, _ in ARGUMENT_CASES]
)
def test_argument_out_of_range_is_one_line(workdir, capsys, argv, expected):
    before = _snapshot(workdir)
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert expected in line
    assert _snapshot(workdir) == before


def test_outputs_that_may_share_a_folder_are_accepted(workdir, monkeypatch):
    """Tables and figures in one folder, and the report inside it, are not collisions."""
    args = cli.build_parser().parse_args(
        ["report", "--out", "res/r.html", "--save-tables", "res", "--figures", "res"]
    )
    monkeypatch.setattr("rope_interp.plots.export.check_image_export", lambda fmt: None)
    cli.validate_args(args)  # raises nothing


# ---- damaged records: statistics files, run folders, the model cache ---------------------------
def _damaged_stats(good: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Statistics files damaged in their metadata, tensors or bytes: name -> (path, line)."""
    from safetensors.torch import load_file, save_file

    tensors, meta = load_file(good), json.loads(_read_header(good))["__metadata__"]
    cases = {}

    def save(name, tensors, meta, expected):
        save_file(tensors, str(root / name), metadata=meta)
        cases[name] = (root / name, expected)

    save("count.safetensors", tensors, {**meta, "tokens_seen": "many"}, "damaged statistics")
    save("spec.safetensors", tensors, {**meta, "spec": "{oops"}, "damaged statistics")
    save("layers.safetensors", tensors, {**meta, "layers": "[0]"}, "not one row per layer")
    nan = {**tensors, "q.sum_norm": tensors["q.sum_norm"] * math.nan}
    save("nan.safetensors", nan, meta, "q.sum_norm is not float64 or holds NaN")
    less = {k: v for k, v in tensors.items() if k != "k.max_norm"}
    save("fewer.safetensors", less, meta, "its tensors are not those of PairStats.save")
    data = good.read_bytes()
    (root / "cut.safetensors").write_bytes(data[: len(data) // 2])
    cases["cut.safetensors"] = (root / "cut.safetensors", "is not a readable statistics file")
    return cases


def _read_header(path: Path) -> bytes:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + length]


def test_merge_refuses_every_damaged_statistics_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = _stats_file(tmp_path / "good.safetensors", seed=0)
    damaged = _damaged_stats(good, tmp_path)
    before = _snapshot(tmp_path)
    for name, (_, expected) in damaged.items():
        assert cli.main(["merge", "m.safetensors", "good.safetensors", name]) == 2, name
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert expected in line and name in line, line
    assert _snapshot(tmp_path) == before


def _record_damage():
    """Edits of a finished condition record that keep its key: each must be recomputed."""
    return {
        "losses_short": lambda r: r.update(losses=r["losses"][:-1]),
        "losses_text": lambda r: r.update(losses=["x"] * len(r["losses"])),
        "complete_text": lambda r: r.update(complete="yes"),
        "rows_negative": lambda r: r.update(rows=-1),
        "sums_shape": lambda r: r.update(sums={m: [[0.0]] for m in r["sums"]}),
        "sums_missing": lambda r: r["sums"].pop("kl"),
        "sequences_other": lambda r: r.update(sequence_ids=["0"] * len(r["sequence_ids"])),
        "parts_list": lambda r: r.update(parts=[]),
    }


@pytest.mark.parametrize("damage", list(_record_damage()))
def test_damaged_run_record_is_recomputed_with_one_note(tmp_path, capsys, damage):
    import pandas as pd

    from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment
    from tests.helpers import random_tokens

    model = make_model("half_full")
    band = select_band(RotarySpec.from_model(model), "high", k=1)
    condition = Condition("zero high 1", Intervention(model, band))
    tokens = random_tokens(model, batch=4, pos=8)
    first = run_experiment(
        model, [condition], tokens, out_dir=tmp_path, settings=RunSettings(progress=False)
    )
    (path,) = (tmp_path / "conditions").glob("*.json")
    record = json.loads(path.read_text())
    _record_damage()[damage](record)
    path.write_text(json.dumps(record))
    capsys.readouterr()
    again = run_experiment(
        model, [condition], tokens, out_dir=tmp_path, settings=RunSettings(progress=False)
    )
    (note,) = capsys.readouterr().err.strip().splitlines()
    assert again.skipped == [] and "recomputing" in note
    pd.testing.assert_frame_equal(again.summary, first.summary)


def test_fifo_in_a_run_folder_is_never_opened(tmp_path, no_hang, capsys):
    from rope_interp.interventions.results import merge_results
    from rope_interp.interventions.run_store import read_record

    (tmp_path / "conditions").mkdir()
    os.mkfifo(tmp_path / "conditions" / "x.json")
    assert read_record(tmp_path / "conditions" / "x.json") is None
    with pytest.raises(RopeInterpError, match="No finished conditions"):
        merge_results([tmp_path])
    assert "unreadable or unfinished" in capsys.readouterr().err


@pytest.mark.parametrize(
    "manifest",
    [
        {"layout": 1, "files": {"data.txt": "big"}},
        {"layout": 1, "files": {"../outside.txt": {"size": 3, "crc32": "0"}}},
        {"layout": 1, "files": {"data.txt": {"size": True, "crc32": "0"}}},
        {"layout": 1, "files": []},
        "fifo",
    ],
    ids=["entry-not-object", "path-outside", "size-bool", "files-list", "manifest-fifo"],
)
def test_damaged_cache_manifest_is_rebuilt_with_one_note(tmp_path, no_hang, capsys, manifest):
    from rope_interp.loading import model_cache

    def build(folder: Path) -> None:
        (folder / "data.txt").write_text("abc")

    entry = model_cache.cached_entry(tmp_path, "k", build, source="src")
    (tmp_path / "outside.txt").write_text("abc")
    (entry / model_cache.MANIFEST).unlink()
    if manifest == "fifo":
        os.mkfifo(entry / model_cache.MANIFEST)
    else:
        (entry / model_cache.MANIFEST).write_text(json.dumps(manifest))
    again = model_cache.cached_entry(tmp_path, "k", build, source="src")
    (note,) = capsys.readouterr().err.strip().splitlines()
    assert "is damaged" in note and "rebuilding" in note
    model_cache.verify(again)  # whole again
    assert (tmp_path / "outside.txt").read_text() == "abc"


def test_fifo_in_an_old_run_folder_given_as_run_dir_is_not_opened(workdir, no_hang, capsys):
    """Deciding whether an existing --run-dir is rope-interp's reads its records: a FIFO
    among them is refused as foreign, not read."""
    (workdir / "old" / "conditions").mkdir(parents=True)
    os.mkfifo(workdir / "old" / "conditions" / "a.json")
    assert cli.main(["ablate", "--out", "a.csv", "--run-dir", "old"]) == 2
    assert "holds files rope-interp did not write" in capsys.readouterr().err
