from __future__ import annotations

import os
import warnings

import pytest
import torch

from tests.helpers import FIXTURES, make_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=DeprecationWarning)
# The tests run tiny models: with several threads a forward pass spends its time in thread
# hand-offs (0.5 s instead of 0.016 s per tiny forward on a busy 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(params=sorted(FIXTURES))
def tiny_model(request):
    """Each tiny fixture model in turn, built fresh for the test."""
    return make_model(request.param)


@pytest.fixture(scope="session")
def real_model():
    """The built-in SmolLM2-135M, loaded once per session."""
    from rope_interp.models import load_model

    return load_model("smollm2-135m", device="cpu")
