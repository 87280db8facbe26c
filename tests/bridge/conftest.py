"""tests/bridge runs only under TransformerLens >= 4 with `TransformerBridge` (the .venv
environment of bash scripts/test.sh). Under TransformerLens 3.x (.venv-tl3) every test here is
reported as skipped, and the modules are not even imported when `TransformerBridge` is missing."""

from __future__ import annotations

import os
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import torch


def _skip_reason() -> tuple[str | None, bool]:
    """(why this folder cannot run here or None, whether its modules can still be imported)."""
    try:
        tl_version = version("transformer-lens")
    except PackageNotFoundError:
        return "transformer-lens is not installed", False
    try:
        major = int(tl_version.split(".")[0])
    except ValueError:
        major = 0
    try:
        from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
    except ImportError:
        return f"TransformerLens {tl_version} has no TransformerBridge", False
    if major < 4:
        return (
            f"TransformerLens {tl_version} < 4: the TransformerBridge tests run in .venv "
            "(TransformerLens 4, bash scripts/test.sh)"
        ), True
    return None, True


SKIP_REASON, _IMPORTABLE = _skip_reason()
_HERE = Path(__file__).parent

if not _IMPORTABLE:
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(config, items):
    if SKIP_REASON is None:
        return
    marker = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(marker)


# The same settings as tests/conftest.py, for a run of this folder with --confcutdir:
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
