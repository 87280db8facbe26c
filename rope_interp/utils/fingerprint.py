"""Fingerprints of what determines a result: weights, tokens, hook code, values.

Used to key reusable results (experiment conditions): two runs share a key only if they ran the
same weights (every byte of every parameter and buffer), the same tokens, the same hook code
(qualified name and source, plus the values the hook closes over) and the same parameters.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rope_interp.host import HostModel


def _digest() -> Any:
    return hashlib.blake2b(digest_size=16)


def tensor_bytes(tensor: Tensor) -> memoryview:
    """The raw bytes of a tensor (any dtype, bfloat16 included), on the CPU."""
    flat = tensor.detach().reshape(-1).contiguous().cpu()
    return memoryview(flat.view(torch.uint8).numpy().data)


def _update_tensor(digest, tensor: Tensor) -> None:
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor_bytes(tensor))


def model_fingerprint(model: HostModel) -> str:
    """blake2b over every parameter and buffer (name, dtype, shape, bytes) and the config.

    Cost: one pass over the weights (SmolLM2-135M, 683 MB with buffers: 0.8–2.7 s on a shared
    2-core CPU), paid once per model: the result is kept while every tensor keeps its storage
    and its version counter (which any in-place edit bumps) and the config is unchanged; tensors
    sharing storage are hashed once.
    """
    state = model.state_dict(keep_vars=False)
    cfg = getattr(model, "cfg", None)
    config = {k: repr(v) for k, v in sorted(vars(cfg).items()) if k != "device"} if cfg else None
    guard = (
        tuple((name, t.data_ptr(), t._version, t.dtype, t.device) for name, t in state.items()),
        json.dumps(config, sort_keys=True),
    )
    cached = _MODEL_FINGERPRINTS.get(model)
    if cached is not None and cached[0] == guard:
        return cached[1]
    digest = _digest()
    seen: dict[tuple[int, int, tuple], str] = {}
    with torch.no_grad():
        for name, tensor in state.items():
            digest.update(name.encode())
            ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.stride())
            if tensor.numel() and ident in seen and tensor.device.type != "meta":
                digest.update(f"same as {seen[ident]}{tensor.dtype}{tuple(tensor.shape)}".encode())
                continue
            seen[ident] = name
            _update_tensor(digest, tensor)
    if config is not None:
        digest.update(json.dumps(config, sort_keys=True).encode())
    fingerprint = digest.hexdigest()
    _MODEL_FINGERPRINTS[model] = (guard, fingerprint)
    return fingerprint


# model -> (what the fingerprint was computed from, cheaply checked; the fingerprint)
_MODEL_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokens_fingerprint(tokens: Tensor) -> str:
    """blake2b of the token ids (as int64) and their shape."""
    digest = _digest()
    _update_tensor(digest, tokens.detach().cpu().to(torch.int64))
    return digest.hexdigest()


def sequence_ids(tokens: Tensor) -> list[str]:
    """One short blake2b id per sequence (row) of `tokens` (to align sequences across runs)."""
    rows = tokens.detach().cpu().to(torch.int64).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in rows]


def value_identity(value: Any, _depth: int = 0) -> str | None:
    """A stable text identity of a value a hook may depend on, or None if it has none
    (an object whose state cannot be read, or nesting deeper than 16: not cached)."""
    if _depth > 16:
        return None
    deeper = functools.partial(value_identity, _depth=_depth + 1)
    if value is None or isinstance(value, bool | int | float | str | bytes | complex):
        return repr(value)
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, Tensor):
        digest = _digest()
        _update_tensor(digest, value)
        return f"tensor:{digest.hexdigest()}"
    if isinstance(value, np.ndarray):
        return value_identity(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, list | tuple | set | frozenset):
        found = [deeper(v) for v in value]
        items = [i for i in found if i is not None]
        if len(items) != len(found):
            return None
        if isinstance(value, set | frozenset):
            items = sorted(items)
        return f"{type(value).__name__}({','.join(items)})"
    if isinstance(value, dict):
        pairs = [(deeper(k), deeper(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "dict(" + ",".join(sorted(f"{k}:{v}" for k, v in pairs)) + ")"
    if callable(value):
        return callable_identity(value, _depth=_depth + 1)
    return None


def callable_identity(fn: Callable, closure: bool = True, _depth: int = 0) -> str | None:
    """Qualified name and source of a hook function, plus (with `closure`) its defaults and the
    values it closes over. None when the code cannot be identified (no source: built-ins,
    functions made by `exec`, callable objects) — a result computed with it is not reusable."""
    if _depth > 16:
        return None
    if isinstance(fn, functools.partial):
        inner = callable_identity(fn.func, closure, _depth + 1)
        args = value_identity(tuple(fn.args), _depth + 1)
        kwargs = value_identity(dict(fn.keywords), _depth + 1)
        if inner is None or args is None or kwargs is None:
            return None
        return f"partial({inner},{args},{kwargs})"
    if inspect.ismethod(fn):
        inner = callable_identity(fn.__func__, closure, _depth + 1)
        owner = value_identity(fn.__self__, _depth + 1)
        return None if inner is None or owner is None else f"method({inner},{owner})"
    if not inspect.isfunction(fn):
        return None
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    parts = [f"{fn.__module__}.{fn.__qualname__}", source]
    if closure:
        values = list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).items())
        for cell in fn.__closure__ or ():
            try:
                values.append(cell.cell_contents)
            except ValueError:  # an empty cell (a name assigned after the def)
                values.append("<empty cell>")
        for value in values:
            ident = value_identity(value, _depth + 1)
            if ident is None:
                return None
            parts.append(ident)
    digest = _digest()
    digest.update("\x00".join(parts).encode())
    return f"{fn.__qualname__}:{digest.hexdigest()}"


def source_fingerprint(*modules) -> str:
    """blake2b of the source files of the given modules (the code that computes a result)."""
    digest = _digest()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()
