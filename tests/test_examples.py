"""Every example runs on a tiny random model (`--tiny`) and writes its figures, so the examples
cannot rot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.helpers import FIXTURES, make_model, random_tokens

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("[0-9]*.py"))


def _load(path: Path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def test_there_is_an_example_per_topic():
    names = " ".join(p.stem for p in SCRIPTS)
    for topic in ("hooks", "usage", "positional", "outliers", "sinks", "band", "p_rope",
                  "phase", "spectra"):  # fmt: skip
        assert topic in names, topic


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs_on_a_tiny_model(path, tmp_path, capsys):
    module = _load(path)
    assert module.__doc__ and "python examples/" in module.__doc__  # says how to run it
    result = module.main(["--tiny", "--out", str(tmp_path)])
    written = sorted(tmp_path.glob("*.html"))
    assert written, "the example wrote no figures"
    assert {p.stem for p in written} == set(result["figures"])
    for page in written:
        assert "plotly.min.js" in page.read_text(encoding="utf-8")
    assert (tmp_path / "plotly.min.js").is_file()  # figures open offline
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_capture_example_on_every_layout(name):
    """The hooks example's own checks hold on every fixture layout (GQA, interleaved, ...)."""
    module = _load(EXAMPLES / "01_capture_with_your_hooks.py")
    model = make_model(name)
    result = module.run(model, random_tokens(model, batch=2, pos=12), layer=1)
    assert result["max_abs_error"] < 1e-4 * max(1.0, result["score_scale"])
    assert result["logits_unchanged"]
    assert len(result["entropy_per_head"]) == model.cfg.n_heads
