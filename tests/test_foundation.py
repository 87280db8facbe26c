"""The shared pieces: atomic writes and the safe number parser."""

import errno
import math
import os

import pytest

from rope_interp.errors import RopeInterpError
from rope_interp.utils.atomic import atomic_write, atomic_write_text
from rope_interp.utils.numbers import parse_number, parse_numbers


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_keeps_previous_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "previous")
    with pytest.raises(OSError), atomic_write(target) as tmp:
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / "out.txt.tmp")
    atomic_write_text(tmp_path / "out.txt", "report")
    assert victim.read_text() == "keep me"
    assert (tmp_path / "out.txt").read_text() == "report"


@pytest.mark.parametrize(
    "text,value",
    [
        ("0.5", 0.5),
        ("-pi/4", -math.pi / 4),
        ("3*pi/8", 3 * math.pi / 8),
        ("1e-3", 1e-3),
        (" 2 ", 2.0),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == pytest.approx(value, rel=0, abs=0)


@pytest.mark.parametrize(
    "text", ["nan", "inf", "1e999", "9**9**9", "__import__('os')", "", "pi(", "1/0", "x" * 100]
)
def test_parse_number_refuses(text):
    with pytest.raises(RopeInterpError, match="--phi"):
        parse_number(text, "--phi")


def test_parse_numbers_needs_one():
    assert parse_numbers("0, pi/2", "--phi") == [0.0, math.pi / 2]
    with pytest.raises(RopeInterpError):
        parse_numbers(" , ", "--phi")
