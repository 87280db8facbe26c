"""Backends: how each kind of model exposes its rotary geometry and its true pre-/post-rotation
q and k (floor 1: below `spec`, `pairs` and `capture`, which ask `backend_for(model)`).

    backend = backend_for(model)          # HookedBackend or BridgeBackend
    backend.check_decomposable()          # UnsupportedModel with the reason, or nothing
    point = backend.read_point("q", 3)    # hook name + exact map to what enters the rotation

- `hooked.py`: TransformerLens 3.x `HookedTransformer` (QK-norm, OLMo-2 norm and clip applied
  to `hook_q`/`hook_k` with the model's own modules; refusals for sinks, log-n, dynamic NTK).
- `bridge.py`: TransformerLens 4.x `TransformerBridge` (rotated q/k derived where the bridge's
  rotated hooks do not fire), with `bridge_geometry.py` (geometry from the wrapped model's
  rotary module) and `bridge_support.py` (which hooks fire, from one probe forward pass).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from rope_interp.core.backends._geometry import Layout, expected_thetas, pair_dims, rotate_by_tables
from rope_interp.core.backends.base import KINDS, Backend, ReadPoint, hook_name
from rope_interp.core.backends.bridge import BridgeBackend
from rope_interp.core.backends.bridge_geometry import is_bridge
from rope_interp.core.backends.hooked import HookedBackend

__all__ = [
    "KINDS",
    "Backend",
    "BridgeBackend",
    "HookedBackend",
    "Layout",
    "ReadPoint",
    "backend_for",
    "expected_thetas",
    "hook_name",
    "is_bridge",
    "pair_dims",
    "rotate_by_tables",
]

_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def backend_for(model: Any) -> Backend:
    """The backend of `model` (one per model, reused): a `BridgeBackend` for a TransformerLens
    `TransformerBridge`, a `HookedBackend` otherwise."""
    try:
        cached = _BACKENDS.get(model)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    backend: Backend = BridgeBackend(model) if is_bridge(model) else HookedBackend(model)
    with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
        _BACKENDS[model] = backend
    return backend
