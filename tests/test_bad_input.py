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

from rope_interp import cli, models
from rope_interp.ablation import Intervention
from rope_interp.cli import loading
from rope_interp.errors import RopeInterpError
from rope_interp.selection import select_band
from rope_interp.spec import RotarySpec
from tests.helpers import make_model


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
    its target too)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            key += f" -> {os.readlink(path)}"
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
    from rope_interp.stats import collect_pair_stats
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
    from rope_interp.files import check_regular_file

    os.mkfifo(tmp_path / "pipe")
    for path, kind in ((tmp_path / "pipe", "a FIFO"), (Path("/dev/null"), "a character device")):
        with pytest.raises(RopeInterpError, match=f"is {kind}"):
            check_regular_file(path, "Input")
    with pytest.raises(RopeInterpError, match="does not exist"):
        check_regular_file(tmp_path / "missing", "Input")
