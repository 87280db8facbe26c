"""The on-disk store of an experiment run: one JSON record per condition in
`OUT/conditions/`, and the resume key that says whether a saved record can be reused.

A record holds a condition's per-sequence losses (clean and ablated), its per-(layer, head)
metric sums and how far it got (`batches_done`, `complete`). Its key hashes everything that
determines those numbers (`parts`): every byte of the weights, the tokens, the hook code
(qualified name and source), every setting and rope-interp's code. A record whose key does not
match is recomputed, with a one-line note on stderr naming what changed; so is a record
whose fields are damaged (wrong types, lists of different lengths, sums of another shape:
`record_problem`), and a FIFO or device in the store is never opened.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from rope_interp.interventions.measures import METRICS
from rope_interp.utils.atomic import atomic_write_text
from rope_interp.utils.files import special_kind
from rope_interp.utils.fingerprint import callable_identity, source_fingerprint, value_identity
from rope_interp.utils.logs import note

FORMAT_VERSION = 2

_NEEDED: tuple[str, ...] = ("format", "name", "key", "parts", "complete", "losses")
_NEEDED += ("losses_base", "sums")
_NEEDED += ("base_sums", "rows", "n_tokens", "batches_done", "sequence_ids")

_PART_NAMES = {
    "model": "the model's weights",
    "tokens": "the tokens",
    "code": "rope-interp's code or version",
    "condition": "the intervention or hook code",
}


# ---- what a key is made of ------------------------------------------------------------------
def code_fingerprint(*modules: ModuleType) -> str:
    """rope-interp's version and the source of the given modules (those that compute a
    condition's numbers)."""
    try:
        version = importlib.metadata.version("rope-interp")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}:{source_fingerprint(*modules)}"


def condition_identity(condition) -> str | None:
    """Hash of a `Condition`'s name, description, intervention state and hook code; None when
    a hook has no readable source (then its results are never reused)."""
    parts = [condition.name, json.dumps(condition.describe(), sort_keys=True, default=str)]
    intervention = condition.intervention
    if intervention is not None:
        state = [
            type(intervention).__qualname__,
            intervention.mode,
            intervention.side,
            repr(intervention.phi),
            repr(intervention.delta),
            value_identity(intervention.selection.mask),
            value_identity(getattr(intervention, "_means", None)),
        ]
        state += [callable_identity(fn, closure=False) for _, fn in intervention.hooks()]
        if any(s is None for s in state):
            return None
        parts += state
    for name, fn in condition.hooks:
        ident = callable_identity(fn)
        if ident is None:
            return None
        parts += [str(name), ident]
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x00".join(parts).encode())
    return digest.hexdigest()


def record_key(parts: dict[str, Any]) -> str | None:
    """The resume key of a condition's record; None when it must never be reused."""
    if parts.get("condition") is None:
        return None
    return hashlib.blake2b(
        json.dumps(parts, sort_keys=True).encode() + bytes([FORMAT_VERSION]), digest_size=16
    ).hexdigest()


# ---- reading and writing records ------------------------------------------------------------
def record_path(store: Path, name: str) -> Path:
    """Where condition `name`'s record lives: a readable, unique file name."""
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "condition"
    return store / f"{safe[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.json"


def read_record(path: Path) -> dict | None:
    """A record of this format, or None if the file is unreadable, incomplete, older or
    damaged (`record_problem`)."""
    record, _ = _read(path)
    return record


def _read(path: Path) -> tuple[dict | None, str]:
    """(the record, "") or (None, why it cannot be used)."""
    if kind := special_kind(path):
        return None, f"it is {kind}"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, "it is unreadable or not JSON"
    if not isinstance(record, dict) or any(k not in record for k in _NEEDED):
        return None, "it is not a complete record"
    if record["format"] != FORMAT_VERSION:
        return None, f"it is of format {record['format']!r}, not {FORMAT_VERSION}"
    problem = record_problem(record)
    return (None, problem) if problem else (record, "")


def record_problem(record: dict, shape: tuple[int, int] | None = None) -> str:
    """Why a record's fields cannot be the numbers rope-interp wrote ("" if they can): wrong
    types, per-sequence lists of different lengths, metric sums that are not `shape`
    ([layer, head]) arrays of every metric."""
    if not (isinstance(record["name"], str) and isinstance(record["parts"], dict)):
        return "its name or parts are of the wrong type"
    if not isinstance(record["complete"], bool):
        return "its 'complete' flag is not true or false"
    for field in ("batches_done", "rows", "n_tokens"):
        value = record[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{field} {value!r} is not a count"
    lists = [record[f] for f in ("losses", "losses_base", "sequence_ids")]
    if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
        return "its per-sequence lists (losses, losses_base, sequence_ids) do not match"
    if not all(_is_number(v) for v in lists[0] + lists[1]):
        return "a loss is not a number"
    shapes = set()
    for field in ("sums", "base_sums"):
        sums = record[field]
        if not isinstance(sums, dict) or set(sums) != set(METRICS):
            return f"{field} does not hold the metrics {', '.join(METRICS)}"
        for values in sums.values():
            try:
                array = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):
                return f"{field} holds something other than numbers"
            shapes.add(array.shape)
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        return "its metric sums are not [layer, head] arrays of one shape"
    if shape is not None and shapes != {tuple(shape)}:
        return f"its metric sums have shape {next(iter(shapes))}, not {tuple(shape)}"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_record(
    store: Path,
    name: str,
    parts: dict[str, Any],
    shape: tuple[int, int] | None = None,
    sequences: Sequence[str] | None = None,
) -> dict | None:
    """The saved record of a condition if its key matches and its numbers fit this run (metric
    sums of `shape`, the sequence ids a prefix of `sequences`, all of them when complete);
    else None, with a one-line note saying why (stale, damaged, not reusable)."""
    path = record_path(store, name)
    if parts.get("condition") is None:
        note(
            f"condition {name!r}: a hook has no readable source (built-in, lambda made by exec, "
            "callable object, or a closure over an object without a fingerprint); computed "
            "afresh and never reused"
        )
        return None
    if not os.path.lexists(path):
        return None
    record, problem = _read(path)
    if record is not None and record["key"] == record_key(parts) and record["name"] == name:
        problem = record_problem(record, shape) or _sequence_problem(record, sequences)
        if not problem:
            return record
    if problem:
        note(f"condition {name!r}: {path} is unreadable or damaged ({problem}); recomputing")
        return None
    if record is None:
        return None
    saved = record.get("parts") or {}
    reasons = [
        f"{label} changed"
        for part, label in _PART_NAMES.items()
        if saved.get(part) != parts.get(part)
    ]
    old, new = saved.get("settings") or {}, parts["settings"]
    reasons += [
        f"{setting} {old.get(setting)!r} → {new[setting]!r}"
        for setting in new
        if not isinstance(old, dict) or old.get(setting) != new[setting]
    ]
    note(
        f"condition {name!r}: the saved result does not match this run "
        f"({'; '.join(reasons) or 'different key'}); recomputing"
    )
    return None


def _sequence_problem(record: dict, sequences: Sequence[str] | None) -> str:
    """Why a record's sequences are not this run's first ones ("" if they are)."""
    if sequences is None:
        return ""
    ids = record["sequence_ids"]
    if ids != list(sequences[: len(ids)]) or (record["complete"] and len(ids) != len(sequences)):
        return f"its {len(ids)} sequences are not this run's first ones"
    return ""


def write_record(store: Path, record: dict) -> None:
    """Save a record atomically (a reader sees the old file or the new one, never half)."""
    atomic_write_text(record_path(store, record["name"]), json.dumps(record, default=json_default))


def json_default(value):
    """JSON for numpy scalars and tensors (as lists); anything else by its str()."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
