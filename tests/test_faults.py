"""Faults the user did not cause: a full disk, a garbage file in a run folder, a sweep killed
by SIGINT or SIGKILL. Nothing is lost (previous files survive), nothing is left half-written
(no orphans), and a resumed sweep equals an uninterrupted one bit for bit.

(The model cache's faults, damage and concurrent first loads, are in test_model_cache.py.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rope_interp import cli

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["--tokens", "64", "--seq-len", "16"]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _assert_one_line_disk_error(capsys):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("rope-interp: error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], err
    assert err.strip().splitlines()[-1] == errors[0] and "Traceback" not in err
    assert ".tmp" not in errors[0]  # names the file asked for, not a temporary one


def test_full_disk_mid_csv_keeps_the_previous_stats(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "stats.csv"
    argv = ["stats", "--out", str(out), *TINY_RUN]
    assert cli.main(argv) == 0
    before = _snapshot(tmp_path)
    real_to_csv = pd.DataFrame.to_csv

    def half_then_full(frame, path, **kwargs):
        real_to_csv(frame.iloc[: len(frame) // 2], path, **kwargs)  # a partial file ...
        _no_space()  # ... then the disk is full

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    capsys.readouterr()
    assert cli.main([*argv[:3], "--seed", "1", *TINY_RUN]) == 1
    _assert_one_line_disk_error(capsys)
    assert _snapshot(tmp_path) == before  # the previous CSV whole, no partial file, no orphan


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "--out", "stats.safetensors"],
        ["ablate", "--out", "ab.csv", "--sweep", "band", "--random-controls", "1",
         "--bootstrap", "10", "--quiet"],
        ["report", "--out", "r.html", "--sections", "usage", "--save-tables", "tables",
         "--ablation-tokens", "32", "--analysis-tokens", "32", "--bootstrap", "10", "--quiet"],
    ],
    ids=["stats", "ablate", "report"],
)  # fmt: skip
def test_full_disk_at_write_time_keeps_every_previous_file(
    tiny, tmp_path, monkeypatch, capsys, command
):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*command, *TINY_RUN]) == 0
    before = _snapshot(tmp_path)
    assert before  # the first run wrote its outputs
    monkeypatch.setattr(os, "fsync", _no_space)  # every write fails when it reaches the disk
    capsys.readouterr()
    assert cli.main([*command, *TINY_RUN]) == 1
    _assert_one_line_disk_error(capsys)
    assert _snapshot(tmp_path) == before  # no 0-byte table, no *.tmp orphan


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (where this process may mount one), unmounted afterwards."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the simulated full disk tests still run)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_really_full_disk_keeps_the_previous_stats(tiny, small_tmpfs, capsys):
    out = small_tmpfs / "stats.csv"
    argv = ["stats", "--out", str(out), *TINY_RUN]
    assert cli.main(argv) == 0
    previous = out.read_bytes()
    fd = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while os.write(fd, b"\0" * 512):
            pass
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    capsys.readouterr()
    assert cli.main(argv) == 1
    _assert_one_line_disk_error(capsys)
    assert out.read_bytes() == previous
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler", "stats.csv"]


def test_garbage_condition_file_is_recomputed_with_a_note(tiny, tmp_path, capsys):
    out = tmp_path / "ab.csv"
    argv = ["ablate", "--out", str(out), "--sweep", "band", "--random-controls", "0",
            "--bootstrap", "10", "--quiet", *TINY_RUN]  # fmt: skip
    assert cli.main(argv) == 0
    first = out.read_bytes()
    records = sorted((tmp_path / "ab.runs" / "conditions").glob("*.json"))
    records[0].write_bytes(b"\x00\xffnot json at all")
    records[1].write_text("[1, 2, 3]")  # valid JSON, not a record
    capsys.readouterr()
    assert cli.main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "unreadable" in line]
    assert len(notes) == 2
    assert out.read_bytes() == first
    assert all(json.loads(r.read_text())["complete"] for r in records)  # repaired on disk


def _killed_sweep(out_dir: Path) -> subprocess.CompletedProcess:
    """The sweep in a child process that SIGKILLs itself in the third condition."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROPE_INTERP_TEST_SIGNAL": "SIGKILL"}
    return subprocess.run(
        [sys.executable, "-m", "tests.interrupted_sweep", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
def single_thread(monkeypatch):
    """The sweep runs single-threaded (bit-identical across processes); restored after."""
    threads = torch.get_num_threads()
    monkeypatch.delenv("ROPE_INTERP_TEST_SIGNAL", raising=False)
    yield
    torch.set_num_threads(threads)


def _tables(out_dir: Path) -> dict[str, bytes]:
    return {name: (out_dir / name).read_bytes() for name in ("summary.csv", "heads.csv")}


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_sweep_killed_mid_way_resumes_bit_identically(
    tmp_path, single_thread, monkeypatch, signal_name
):
    from tests import interrupted_sweep

    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "uninterrupted"
    if signal_name == "SIGKILL":  # in a child process, which dies on the spot
        killed = _killed_sweep(killed_dir)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    else:  # Ctrl-C: KeyboardInterrupt raised from inside a hook, here
        monkeypatch.setenv("ROPE_INTERP_TEST_SIGNAL", signal_name)
        # Python's own Ctrl-C handler, also where the suite was started in the background
        # (which leaves SIGINT ignored, so the signal would pass unnoticed).
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt):
                interrupted_sweep.run(killed_dir)
        finally:
            signal.signal(signal.SIGINT, previous)
        monkeypatch.delenv("ROPE_INTERP_TEST_SIGNAL")
    assert not (killed_dir / "summary.csv").exists()  # it died before the end
    saved = [json.loads(p.read_text()) for p in (killed_dir / "conditions").glob("*.json")]
    assert [(r["complete"], r["batches_done"]) for r in saved] == [(False, 1)] * 4
    assert not list(killed_dir.rglob("*.tmp"))  # and left no half-written file
    interrupted_sweep.run(killed_dir)  # resumes every condition from its second batch
    interrupted_sweep.run(reference_dir)
    assert _tables(killed_dir) == _tables(reference_dir)
