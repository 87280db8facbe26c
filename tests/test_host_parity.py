"""The same report on both TransformerLens hosts: every table of `rope-interp report` on a tiny
Llama checkpoint agrees between TransformerLens 4 (`TransformerBridge`, this environment) and
3.x (`HookedTransformer`, the .venv-tl3 that scripts/test.sh builds) within 1e-4 of each
column's scale, text columns number by number (benchmarks/compare_tables.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.compare_tables import compare_folders
from rope_interp.testing.family_check import build_checkpoint, families
from tests.helpers import HOST

_ROOT = Path(__file__).resolve().parents[1]
_TL3_PYTHON = _ROOT / ".venv-tl3" / "bin" / "python"
_REPORT = [
    "report",
    "--device", "cpu",
    "--tokens", "256",
    "--seq-len", "32",
    "--ablation-tokens", "256",
    "--analysis-tokens", "128",
    "--bootstrap", "50",
    "--quiet",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    HOST != "bridge" or not _TL3_PYTHON.is_file(),
    reason="compares TransformerLens 4 (this host) with .venv-tl3 (bash scripts/test.sh)",
)


def _report(python: str, model: Path, out: Path) -> None:
    command = [python, "-m", "rope_interp.cli", *_REPORT, "--model", str(model)]
    command += ["--out", str(out / "report.html"), "--save-tables", str(out / "tables")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=_ROOT, timeout=600)
    assert done.returncode == 0, f"{python}: {done.stderr[-2000:]}"


def _sharp_checkpoint(directory: Path) -> Path:
    """The tiny Llama checkpoint with q/k weights scaled up: its random attention is nearly
    uniform, so ablations would move the loss by float32 noise, not by what they do."""
    from safetensors.torch import load_file, save_file

    llama = next(family for family in families() if family.name == "Llama")
    build_checkpoint(llama, directory)
    weights = load_file(str(directory / "model.safetensors"))
    for name in weights:
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            weights[name] = weights[name] * 20
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def test_every_report_table_agrees_between_the_hosts(tmp_path):
    model = _sharp_checkpoint(tmp_path / "llama")
    _report(sys.executable, model, tmp_path / "tl4")
    _report(str(_TL3_PYTHON), model, tmp_path / "tl3")
    results = compare_folders(tmp_path / "tl3" / "tables", tmp_path / "tl4" / "tables", 1e-4)
    assert len(results) >= 15, [line for line, _ in results]
    beyond = [line for line, within in results if not within]
    assert not beyond, beyond
