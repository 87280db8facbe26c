"""Experiment runner: conditions × a corpus → tidy tables.

    conditions = [
        Condition("high 4", Intervention(model, select_band(spec, "high", k=4))),
        Condition("p=0.75", p_rope(model, 0.75), params={"p": 0.75}),
    ]
    result = run_experiment(model, conditions, corpus, out_dir="runs/ablations")
    result.summary   # one row per condition: Δloss (nats/token) with a bootstrap 95 % CI
    result.heads     # one row per (condition, layer, head): attention KL, positional scores, ...

What is measured (attention metrics average over sequences and query positions q ≥ 1, the
row q = 0 being trivial):
- `delta_loss`: mean over sequences of (ablated − clean) next-token loss in nats/token, with a
  percentile bootstrap interval over sequences (`ci_low`, `ci_high`; seeded).
- per (layer, head): `kl` = KL(clean attention row ‖ ablated row); `diag` = attention on the
  query's own position; `prev` = on the previous token; `first` = on position 0; `entropy`
  (nats) and `max_weight` of the row; each also as `*_base` for the clean model.

Efficiency: batch by batch, the clean model runs once and its residual stream
`blocks.{l}.hook_resid_pre` is kept for every layer l where a condition starts; each condition
resumes from there with `model(resid, start_at_layer=l)`. Layers before l are identical to the
clean run by construction (their KL is 0 and their metrics are the clean ones). Only the current
batch's clean patterns and residual streams are held (memory O(batch), not O(corpus)).

Resumable and mergeable: with `out_dir`, each condition's per-sequence losses and per-(layer,
head) metric sums are written atomically to `conditions/*.json` (unfinished ones every
`checkpoint_seconds`), keyed by everything that determines them: every byte of the weights, the
tokens, the hook code (qualified name and source), every setting and rope-interp's code. A re-run
reuses a matching condition and recomputes a stale one with a one-line note on stderr;
`merge_results` combines the run directories of shards.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.activation_functions import apply_softcap

from rope_interp.ablation import Intervention, hook_layers
from rope_interp.atomic import atomic_write, atomic_write_text
from rope_interp.capturing import Hook
from rope_interp.data import Corpus
from rope_interp.errors import RopeInterpError
from rope_interp.fingerprint import (
    callable_identity,
    model_fingerprint,
    sequence_ids,
    source_fingerprint,
    tokens_fingerprint,
    value_identity,
)

METRICS = ("kl", "diag", "prev", "first", "entropy", "max_weight")
_ROW_METRICS = METRICS[1:]
_FORMAT_VERSION = 2


@dataclass
class Condition:
    """One experimental condition: an intervention (or None for a clean control) plus any of
    your own forward hooks, and free-form parameters copied into the result tables."""

    name: str
    intervention: Intervention | None = None
    hooks: list[Hook] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def all_hooks(self) -> list[Hook]:
        own = self.intervention.hooks() if self.intervention is not None else []
        return own + list(self.hooks)

    def first_layer(self, n_layers: int) -> int:
        return hook_layers(self.all_hooks(), n_layers)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.intervention.params()) if self.intervention else {}
        out.update(self.params)
        if self.hooks:
            out["extra_hooks"] = sorted({name for name, _ in self.hooks if isinstance(name, str)})
        return out


@dataclass
class ExperimentResult:
    """`summary`: one row per condition; `heads`: one per (condition, layer, head);
    `sequences`: one per (condition, sequence) with `loss_base`, `loss`, `delta_loss` and a
    `sequence_id` (hash of the sequence's tokens), for paired contrasts (`rope_interp.contrasts`);
    `skipped`: conditions reused from the run directory."""

    summary: pd.DataFrame
    heads: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    sequences: pd.DataFrame = field(default_factory=pd.DataFrame)


# ---- pure metric maths ----------------------------------------------------------------------
def row_metrics(
    pattern: Float[Tensor, "batch head qpos kpos"],
) -> dict[str, Float[Tensor, "head"]]:
    """Sums over batch and query rows q ≥ 1 of diag, prev, first, entropy and max weight."""
    rows = pattern[:, :, 1:].float()
    return {
        "diag": pattern.diagonal(dim1=-2, dim2=-1)[..., 1:].float().sum((0, 2)),
        "prev": pattern.diagonal(offset=-1, dim1=-2, dim2=-1).float().sum((0, 2)),
        "first": rows[..., 0].sum((0, 2)),
        "entropy": -torch.special.xlogy(rows, rows).sum(-1).sum((0, 2)),
        "max_weight": rows.amax(-1).sum((0, 2)),
    }


def attention_kl(
    base: Float[Tensor, "batch head qpos kpos"], ablated: Float[Tensor, "batch head qpos kpos"]
) -> Float[Tensor, "head"]:
    """Σ over batch and rows q ≥ 1 of KL(base row ‖ ablated row) in nats."""
    p = base[:, :, 1:].float()
    q = ablated[:, :, 1:].float().clamp_min(1e-30)
    kl = torch.special.xlogy(p, p) - torch.special.xlogy(p, q)
    return kl.sum(-1).clamp_min(0).sum((0, 2))


def sequence_losses(
    logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch"]:
    """Mean next-token cross-entropy per sequence (nats/token)."""
    batch, pos, vocab = logits.shape
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, vocab),
        tokens[:, 1:].reshape(-1).to(logits.device),
        reduction="none",
    )
    return nll.view(batch, pos - 1).mean(-1)


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over the given per-sequence values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


# ---- the runner -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSettings:
    """How `run_experiment` runs. Every field that can change a number is part of the resume
    key (`keyed()`); `pattern_device`, `progress` and `checkpoint_seconds` cannot.

    Fields:
        batch_size: sequences per forward pass.
        n_boot, seed: bootstrap resamples and seed of the CIs.
        attention: also measure attention (KL, positional scores, first-token mass, sharpness).
        reuse_prefix: resume each condition from the clean residual stream at its first hooked
            layer (False: full forward passes, for comparison).
        pattern_dtype: storage of the current batch's clean patterns for the KL (float16
            halves it; KL noise floor ~3e-5 nats).
        pattern_device: where those patterns wait for the conditions (default: the model's
            device; "cpu" keeps the GPU at one layer's pattern at a time).
        fast_unembed: unembed with a once-made contiguous copy of W_U.T (bit-identical logits).
        checkpoint_seconds: with an `out_dir`, save unfinished conditions at most this often
            (a resumed run continues from the last saved batch, bit-identically).
    """

    batch_size: int = 8
    n_boot: int = 1000
    seed: int = 0
    attention: bool = True
    reuse_prefix: bool = True
    pattern_dtype: torch.dtype = torch.float32
    pattern_device: str | None = None
    fast_unembed: bool = True
    progress: bool = True
    checkpoint_seconds: float = 60.0

    def keyed(self) -> dict[str, Any]:
        """The settings that determine the numbers (JSON-friendly)."""
        return {
            "batch_size": self.batch_size,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "attention": self.attention,
            "reuse_prefix": self.reuse_prefix,
            "pattern_dtype": str(self.pattern_dtype),
            "fast_unembed": self.fast_unembed,
        }

    def check(self) -> None:
        for name in ("batch_size", "n_boot"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise RopeInterpError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.seed, int | np.integer) or isinstance(self.seed, bool):
            raise RopeInterpError(f"seed must be an integer, got {self.seed!r}.")
        if self.pattern_dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise RopeInterpError(
                f"pattern_dtype must be a floating dtype, got {self.pattern_dtype!r}."
            )


class _Forward:
    """The model's forward from a layer, with the unembedding's transposed weight made
    contiguous once (TransformerLens copies it on every call: ~25 % of a SmolLM2 forward on
    CPU). Same op on the same values, so logits equal `model(...)` bit for bit; hooks on
    `ln_final` and `unembed.hook_in/hook_out` still fire."""

    def __init__(self, model, fast: bool = True):
        self.model = model
        unembed = getattr(model, "unembed", None)
        self.weight = None
        if fast and type(unembed).__name__ == "Unembed" and hasattr(unembed, "W_U"):
            with torch.no_grad():
                self.weight = unembed.W_U.detach().T.contiguous()

    def __call__(self, x: Tensor, start: int) -> Tensor:
        model = self.model
        start_at = start if start > 0 else None
        if self.weight is None:
            return model(x, start_at_layer=start_at, return_type="logits")
        resid = model(x, start_at_layer=start_at, stop_at_layer=model.cfg.n_layers)
        if model.cfg.normalization_type is not None:
            resid = model.ln_final(resid)
        unembed = model.unembed
        logits = F.linear(unembed.hook_in(resid), self.weight, unembed.b_U)
        return apply_softcap(unembed.hook_out(logits), model.cfg.output_logits_soft_cap)


def _zeros(n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    return {m: np.zeros((n_layers, n_heads), dtype=np.float64) for m in METRICS}


def _add(sums: dict[str, np.ndarray], layer: int, values: dict[str, Tensor]) -> None:
    for name, value in values.items():
        sums[name][layer] += value.double().cpu().numpy()


@dataclass
class _State:
    """One condition's running totals: per-sequence losses and per-(layer, head) metric sums."""

    condition: Condition
    key: str | None
    parts: dict[str, Any]
    first_hooked: int
    batches_done: int = 0
    losses: list[float] = field(default_factory=list)
    losses_base: list[float] = field(default_factory=list)
    rows: int = 0
    n_tokens: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    base_sums: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _CleanBatch:
    """The clean model on one batch; dropped before the next batch (memory O(batch))."""

    losses: Tensor  # [batch] float64, CPU
    resid: dict[int, Tensor]  # layer → resid_pre
    patterns: dict[int, Tensor]  # layer → pattern (pattern_dtype, on pattern_device)
    sums: dict[str, np.ndarray]  # metric sums of this batch, [layer, head]
    rows: int


def run_experiment(
    model,
    conditions: Sequence[Condition],
    tokens: Corpus | Tensor,
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    n_boot: int = 1000,
    seed: int = 0,
    attention: bool = True,
    reuse_prefix: bool = True,
    progress: bool = True,
    pattern_dtype: torch.dtype | None = None,
    fast_unembed: bool = True,
    pattern_device: str | None = None,
    settings: RunSettings | None = None,
) -> ExperimentResult:
    """Run every condition on `tokens` and measure it against the clean model.

    Batch by batch: the clean model runs once per batch, then every condition on that batch,
    so memory holds one batch's clean patterns and residual streams, never the corpus's.

    Args:
        conditions: uniquely named `Condition`s.
        tokens: a `Corpus` or `Int[Tensor, "batch pos"]` (sequences of equal length).
        out_dir: where per-condition results go (`conditions/*.json`: per-sequence losses,
            metric sums, the resume key). A finished condition whose key matches (weights,
            tokens, hook code, every setting, rope-interp's code) is reused; a mismatch is
            recomputed with a one-line note on stderr.
        settings: a `RunSettings`; if given, the other keyword arguments are ignored (they
            are the fields of `RunSettings`, documented there).
    """
    if settings is None:
        settings = RunSettings(
            batch_size=batch_size,
            n_boot=n_boot,
            seed=seed,
            attention=attention,
            reuse_prefix=reuse_prefix,
            pattern_dtype=pattern_dtype or torch.float32,
            pattern_device=pattern_device,
            fast_unembed=fast_unembed,
            progress=progress,
        )
    settings.check()
    token_tensor = tokens.tokens if isinstance(tokens, Corpus) else tokens
    if not isinstance(token_tensor, Tensor) or token_tensor.ndim != 2:
        raise RopeInterpError("tokens must be a Corpus or an integer tensor [batch, pos].")
    if token_tensor.shape[1] < 2:
        raise RopeInterpError("Sequences need at least 2 tokens to measure a next-token loss.")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise RopeInterpError(f"Condition names must be unique; repeated: {dupes}.")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    store = Path(out_dir) / "conditions" if out_dir is not None else None
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
    shared = {
        "model": model_fingerprint(model),
        "tokens": tokens_fingerprint(token_tensor),
        "code": _code_fingerprint(),
        "settings": settings.keyed(),
    }
    seq_ids = sequence_ids(token_tensor)
    records: dict[str, dict] = {}
    states: list[_State] = []
    for condition in conditions:
        parts = {**shared, "condition": _condition_identity(condition)}
        key = _key(parts)
        state = _State(
            condition,
            key,
            parts,
            min(condition.first_layer(n_layers), n_layers),
            sums=_zeros(n_layers, n_heads),
            base_sums=_zeros(n_layers, n_heads),
        )
        saved = _load(store, condition.name, parts) if store is not None else None
        if saved is not None and saved.get("complete"):
            records[condition.name] = saved
            continue
        if saved is not None:
            _restore(state, saved)
        states.append(state)

    batches = token_tensor.split(settings.batch_size)
    if states:
        _run_states(model, states, batches, seq_ids, settings, store, records)

    ran = {s.condition.name for s in states}
    result = _result([records[n] for n in names], skipped=[n for n in names if n not in ran])
    if out_dir is not None:
        _atomic_write_csv(Path(out_dir) / "summary.csv", result.summary)
        _atomic_write_csv(Path(out_dir) / "heads.csv", result.heads)
        _atomic_write_csv(Path(out_dir) / "sequences.csv", result.sequences)
    return result


def _run_states(model, states, batches, seq_ids, settings: RunSettings, store, records) -> None:
    n_layers = model.cfg.n_layers
    device = model.cfg.device
    forward = _Forward(model, settings.fast_unembed)
    first = min(s.batches_done for s in states)
    last_save = time.monotonic()
    bar = tqdm(
        range(first, len(batches)),
        desc=f"{len(states)} condition(s)",
        unit="batch",
        disable=not settings.progress,
    )
    offset = sum(len(b) for b in batches[:first])
    for index in bar:
        batch = batches[index].to(device)
        active = [s for s in states if s.batches_done == index]
        if active:
            starts = {s.first_hooked for s in active}
            clean = _clean_batch(model, batch, starts, settings, forward)
            for state in active:
                bar.set_postfix_str(state.condition.name, refresh=False)
                _condition_batch(model, state, batch, clean, settings, forward)
                state.batches_done += 1
                if state.batches_done == len(batches):
                    records[state.condition.name] = _record(
                        state, seq_ids[: offset + len(batch)], len(batches), n_layers, settings
                    )
                    if store is not None:
                        _write_record(store, records[state.condition.name])
            del clean
        offset += len(batch)
        if store is not None and time.monotonic() - last_save >= settings.checkpoint_seconds:
            for state in states:
                if 0 < state.batches_done < len(batches):
                    record = _record(
                        state, seq_ids[: len(state.losses)], len(batches), n_layers, settings
                    )
                    _write_record(store, record)
            last_save = time.monotonic()


def _clean_batch(model, batch, start_layers: set[int], settings, forward) -> _CleanBatch:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    first_needed = min(start_layers)
    sums = _zeros(n_layers, n_heads)
    resid: dict[int, Tensor] = {}
    patterns: dict[int, Tensor] = {}
    target = settings.pattern_device

    def save_resid(x: Tensor, hook: HookPoint) -> None:
        resid[hook.layer()] = x.detach()

    def save_pattern(x: Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        _add(sums, layer, row_metrics(x))
        if layer >= first_needed:
            patterns[layer] = x.detach().to(
                device=target or x.device, dtype=settings.pattern_dtype, copy=True
            )

    hooks: list[Hook] = [
        (f"blocks.{layer}.hook_resid_pre", save_resid)
        for layer in sorted(start_layers)
        if 0 < layer < n_layers and settings.reuse_prefix
    ]
    if settings.attention:
        hooks += [(f"blocks.{layer}.attn.hook_pattern", save_pattern) for layer in range(n_layers)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = forward(batch, 0)
    losses = sequence_losses(logits, batch).double().cpu()
    return _CleanBatch(losses, resid, patterns, sums, batch.shape[0] * (batch.shape[1] - 1))


def _condition_batch(model, state: _State, batch, clean: _CleanBatch, settings, forward) -> None:
    n_layers = model.cfg.n_layers
    start = state.first_hooked if settings.reuse_prefix else 0
    sums = state.sums
    hooks = state.condition.all_hooks()

    def measure(x: Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        _add(sums, layer, row_metrics(x))
        base = clean.patterns[layer].to(x.device)
        _add(sums, layer, {"kl": attention_kl(base, x)})

    if settings.attention:
        hooks += [
            (f"blocks.{layer}.attn.hook_pattern", measure)
            for layer in range(state.first_hooked, n_layers)
        ]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        if state.first_hooked >= n_layers:
            logits = None  # touches no layer: identical to the clean model
        elif start > 0:
            logits = forward(clean.resid[start], start)
        else:
            logits = forward(batch, 0)
    losses = clean.losses if logits is None else sequence_losses(logits, batch).double().cpu()
    state.losses.extend(losses.tolist())
    state.losses_base.extend(clean.losses.tolist())
    for name in METRICS:
        state.base_sums[name] += clean.sums[name]
    state.rows += clean.rows
    state.n_tokens += batch.numel()


# ---- records: what a condition leaves on disk -----------------------------------------------
def _record(state: _State, ids: list[str], n_batches: int, n_layers: int, settings) -> dict:
    condition = state.condition
    complete = state.batches_done == n_batches
    record = {
        "format": _FORMAT_VERSION,
        "name": condition.name,
        "key": state.key,
        "parts": state.parts,
        "complete": complete,
        "batches_done": state.batches_done,
        "n_batches": n_batches,
        "describe": json.loads(json.dumps(condition.describe(), default=_json_default)),
        "first_layer": state.first_hooked,
        "attention": settings.attention,
        "n_boot": settings.n_boot,
        "seed": settings.seed,
        "sequence_ids": list(ids),
        "losses": list(state.losses),
        "losses_base": list(state.losses_base),
        "rows": state.rows,
        "n_tokens": state.n_tokens,
        "sums": {m: v.tolist() for m, v in state.sums.items()},
        "base_sums": {m: v.tolist() for m, v in state.base_sums.items()},
    }
    return record


def _restore(state: _State, saved: dict) -> None:
    state.batches_done = int(saved["batches_done"])
    state.losses = [float(v) for v in saved["losses"]]
    state.losses_base = [float(v) for v in saved["losses_base"]]
    state.rows = int(saved["rows"])
    state.n_tokens = int(saved["n_tokens"])
    state.sums = {m: np.array(saved["sums"][m], dtype=np.float64) for m in METRICS}
    state.base_sums = {m: np.array(saved["base_sums"][m], dtype=np.float64) for m in METRICS}


def _tables(record: dict) -> tuple[dict, list[dict]]:
    """A complete record → its summary row and its per-(layer, head) rows."""
    loss = np.asarray(record["losses"], dtype=np.float64)
    base = np.asarray(record["losses_base"], dtype=np.float64)
    diff = loss - base
    low, high = bootstrap_ci(diff, record["n_boot"], record["seed"])
    summary = {
        "condition": record["name"],
        **record["describe"],
        "first_layer": record["first_layer"],
        "n_sequences": len(diff),
        "n_tokens": record["n_tokens"],
        "loss_base": float(base.mean()),
        "loss": float(loss.mean()),
        "delta_loss": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
    }
    head_rows: list[dict] = []
    if record["attention"]:
        rows = record["rows"]
        sums = {m: np.asarray(v) for m, v in record["sums"].items()}
        base_sums = {m: np.asarray(v) for m, v in record["base_sums"].items()}
        n_layers, n_heads = sums["kl"].shape
        for layer in range(n_layers):
            affected = layer >= record["first_layer"]
            for head in range(n_heads):
                row = {"condition": record["name"], "layer": layer, "head": head}
                for name in METRICS:
                    base_value = 0.0 if name == "kl" else float(base_sums[name][layer, head])
                    value = float(sums[name][layer, head]) if affected else base_value
                    row[name] = value / rows
                    if name != "kl":
                        row[f"{name}_base"] = base_value / rows
                head_rows.append(row)
    return summary, head_rows


def _result(records: list[dict], skipped: list[str]) -> ExperimentResult:
    summaries, heads, sequences = [], [], []
    for record in records:
        summary, head_rows = _tables(record)
        summaries.append(summary)
        heads.extend(head_rows)
        loss = np.asarray(record["losses"], dtype=np.float64)
        base = np.asarray(record["losses_base"], dtype=np.float64)
        sequences.append(
            pd.DataFrame(
                {
                    "condition": record["name"],
                    "sequence": np.arange(len(loss)),
                    "sequence_id": record["sequence_ids"],
                    "loss_base": base,
                    "loss": loss,
                    "delta_loss": loss - base,
                }
            )
        )
    sequence_frame = (
        pd.concat(sequences, ignore_index=True)
        if sequences
        else pd.DataFrame(columns=["condition", "sequence", "sequence_id", "delta_loss"])
    )
    return ExperimentResult(
        summary=pd.DataFrame(summaries),
        heads=pd.DataFrame(heads),
        skipped=skipped,
        sequences=sequence_frame,
    )


def merge_results(
    dirs: Sequence[str | Path], out_dir: str | Path | None = None
) -> ExperimentResult:
    """Combine the run directories of shards (disjoint sequences, same model, code, conditions
    and settings) into one result, as if one run had taken their sequences in the given order:
    per-sequence losses are concatenated (exact), metric sums and row counts added."""
    if not dirs:
        raise RopeInterpError("merge_results needs at least one run directory.")
    merged: dict[str, dict] = {}
    order: list[str] = []
    for directory in dirs:
        store = Path(directory) / "conditions"
        if not store.is_dir():
            raise RopeInterpError(f"{directory} is not a run directory (no conditions/ folder).")
        for path in sorted(store.glob("*.json")):
            record = _read(path)
            if record is None or not record.get("complete"):
                _note(f"{path}: unreadable or unfinished condition file; left out of the merge")
                continue
            name = record["name"]
            if name not in merged:
                merged[name] = json.loads(json.dumps(record))
                order.append(name)
                continue
            _fold(merged[name], record, path)
    if not merged:
        raise RopeInterpError(f"No finished conditions in {[str(d) for d in dirs]}.")
    counts = {name: len(merged[name]["losses"]) for name in order}
    if len(set(counts.values())) > 1:
        raise RopeInterpError(
            f"The shards do not cover the same conditions: sequences per condition {counts}."
        )
    result = _result([merged[n] for n in order], skipped=[])
    if out_dir is not None:
        for name in order:
            _write_record(Path(out_dir) / "conditions", merged[name])
        _atomic_write_csv(Path(out_dir) / "summary.csv", result.summary)
        _atomic_write_csv(Path(out_dir) / "heads.csv", result.heads)
        _atomic_write_csv(Path(out_dir) / "sequences.csv", result.sequences)
    return result


def _fold(into: dict, record: dict, path: Path) -> None:
    """Add one shard's record of a condition to the merged record (in place)."""
    mine, theirs = into["parts"], record["parts"]
    for part in ("model", "code", "settings", "condition"):
        if mine.get(part) != theirs.get(part):
            raise RopeInterpError(
                f"{path}: condition {record['name']!r} was run with a different {part} than in "
                "the first shard; merge only shards of one experiment."
            )
    overlap = set(into["sequence_ids"]) & set(record["sequence_ids"])
    if overlap:
        raise RopeInterpError(
            f"{path}: {len(overlap)} sequence(s) of condition {record['name']!r} are already in "
            "another shard; shards must hold disjoint sequences."
        )
    for field_name in ("sequence_ids", "losses", "losses_base"):
        into[field_name] = into[field_name] + record[field_name]
    into["rows"] += record["rows"]
    for table in ("sums", "base_sums"):
        for metric in METRICS:
            total = np.asarray(into[table][metric]) + np.asarray(record[table][metric])
            into[table][metric] = total.tolist()
    into["n_tokens"] += record["n_tokens"]
    into["parts"] = {**mine, "tokens": None}
    into["key"] = None


# ---- persistence ----------------------------------------------------------------------------
def _code_fingerprint() -> str:
    """rope-interp's version and the source of the modules that compute a condition."""
    import rope_interp.ablation as ablation_module

    try:
        version = importlib.metadata.version("rope-interp")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}:{source_fingerprint(sys.modules[__name__], ablation_module)}"


def _condition_identity(condition: Condition) -> str | None:
    """Hash of the condition's name, description, intervention state and hook code; None when
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
        parts += state  # type: ignore[arg-type]
    for name, fn in condition.hooks:
        ident = callable_identity(fn)
        if ident is None:
            return None
        parts += [str(name), ident]
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x00".join(parts).encode())
    return digest.hexdigest()


def _key(parts: dict[str, Any]) -> str | None:
    if parts.get("condition") is None:
        return None
    return hashlib.blake2b(
        json.dumps(parts, sort_keys=True).encode() + bytes([_FORMAT_VERSION]), digest_size=16
    ).hexdigest()


def _slug(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "condition"
    return f"{safe[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _note(message: str) -> None:
    print(f"rope-interp: {message}", file=sys.stderr, flush=True)


_PART_NAMES = {
    "model": "the model's weights",
    "tokens": "the tokens",
    "code": "rope-interp's code or version",
    "condition": "the intervention or hook code",
}


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    needed = ("format", "name", "key", "parts", "complete", "losses", "losses_base", "sums")
    needed += ("base_sums", "rows", "n_tokens", "batches_done", "sequence_ids")
    if not isinstance(record, dict) or any(k not in record for k in needed):
        return None
    if record["format"] != _FORMAT_VERSION:
        return None
    return record


def _load(store: Path, name: str, parts: dict[str, Any]) -> dict | None:
    """The saved record of a condition if its key matches; else None, with a one-line note
    saying why (stale, unreadable, not reusable)."""
    path = store / f"{_slug(name)}.json"
    if parts.get("condition") is None:
        _note(
            f"condition {name!r}: a hook has no readable source (built-in, lambda made by exec, "
            "callable object, or a closure over an object without a fingerprint); computed "
            "afresh and never reused"
        )
        return None
    if not path.is_file():
        return None
    record = _read(path)
    if record is None:
        _note(f"condition {name!r}: {path} is unreadable or of another format; recomputing")
        return None
    key = _key(parts)
    if record["key"] == key and record["name"] == name:
        return record
    saved = record.get("parts") or {}
    reasons = []
    for part, label in _PART_NAMES.items():
        if saved.get(part) != parts.get(part):
            reasons.append(f"{label} changed")
    old, new = saved.get("settings") or {}, parts["settings"]
    reasons += [
        f"{setting} {old.get(setting)!r} → {new[setting]!r}"
        for setting in new
        if old.get(setting) != new[setting]
    ]
    _note(
        f"condition {name!r}: the saved result does not match this run "
        f"({'; '.join(reasons) or 'different key'}); recomputing"
    )
    return None


def _write_record(store: Path, record: dict) -> None:
    atomic_write_text(
        store / f"{_slug(record['name'])}.json", json.dumps(record, default=_json_default)
    )


def _atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def conditions_from(interventions: Iterable[tuple[str, Intervention]]) -> list[Condition]:
    """`[(name, intervention), ...]` → conditions."""
    return [Condition(name, intervention) for name, intervention in interventions]
