"""The curated public API (`import rope_interp as ri`); the README's quick start as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rope_interp

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_resolves_to_its_module():
    assert sorted(rope_interp.__all__) == sorted(rope_interp._EXPORTS)
    for name in rope_interp.__all__:
        value = getattr(rope_interp, name)
        assert getattr(value, "__name__", name) == name
    assert set(rope_interp.__all__) <= set(dir(rope_interp))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rope_interp.nope  # noqa: B018


def test_import_is_lazy():
    # A fresh interpreter: importing the package imports neither torch nor TransformerLens.
    modules = "('torch', 'transformer_lens')"
    code = f"import sys, rope_interp; print(*(m in sys.modules for m in {modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_py_typed_ships():
    assert (Path(rope_interp.__file__).parent / "py.typed").is_file()


def _readme_quick_start() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Quick start")
    return re.search(r"```python\n(.*?)```", readme[start:], re.S).group(1)


@pytest.mark.real_model
def test_readme_quick_start_runs_as_written(real_model, monkeypatch):
    # The same model the README names, loaded once per session instead of again.
    monkeypatch.setattr("rope_interp.loading.models.load_model", lambda *a, **k: real_model)
    monkeypatch.setattr(rope_interp, "load_model", lambda *a, **k: real_model, raising=False)
    namespace: dict = {}
    exec(compile(_readme_quick_start(), "README.md", "exec"), namespace)
    per_pair, pass_through = namespace["per_pair"], namespace["pass_through"]
    _, cache = real_model.run_with_cache(
        namespace["corpus"].tokens[:2], names_filter="blocks.3.attn.hook_attn_scores"
    )
    scores = cache["blocks.3.attn.hook_attn_scores"]
    causal = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
    total = per_pair.sum(-1) + pass_through
    torch.testing.assert_close(total[..., causal], scores[..., causal], rtol=1e-4, atol=1e-4)
    frame = namespace["stats"].to_frame()
    assert len(frame) == 30 * (9 + 3) * 32  # layers × (query heads + KV heads) × pairs


def test_walkthrough_notebook_runs(capsys):
    """examples/walkthrough.py: a jupytext notebook from a user's own model (a bridge or a
    HookedTransformer, by host) to a decomposition (checked against hook_attn_scores inside),
    a statistic and an ablation."""
    import runpy

    path = ROOT / "examples" / "walkthrough.py"
    assert "# %% [markdown]" in path.read_text(encoding="utf-8")  # percent-format cells
    namespace = runpy.run_path(str(path), run_name="__main__")
    assert namespace["error"] < 1e-4
    assert set(namespace["result"].summary["condition"]) == {"high 2", "random 2"}
    assert "max |Σ pairs + pass-through − scores|" in capsys.readouterr().out


def test_every_package_folder_is_a_regular_package():
    """A folder without __init__.py is left out of the wheel (setuptools finds packages by it),
    though imports from a checkout still work."""
    import rope_interp

    root = Path(rope_interp.__file__).parent
    folders = {p.parent for p in root.rglob("*.py")}
    missing = sorted(str(f.relative_to(root)) for f in folders if not (f / "__init__.py").exists())
    assert not missing
