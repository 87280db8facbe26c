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
`checkpoint_seconds`), keyed by everything that determines them (`run_store`). A
re-run reuses a matching condition and recomputes a stale one with a one-line note on stderr;
`rope_interp.interventions.results.merge_results` combines the run directories of shards.

This module is the run loop; the metric maths is in `measures`, the records on disk
and their keys in `rope_interp.interventions.run_store`, the tables built from records in
`rope_interp.interventions.results`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.activation_functions import apply_softcap

import rope_interp.interventions.ablation as ablation_module
import rope_interp.interventions.measures as measures_module
from rope_interp.core.capturing import Hook
from rope_interp.core.runner import run_batches
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel
from rope_interp.interventions.ablation import Intervention, hook_layers
from rope_interp.interventions.measures import (
    METRICS,
    add_to_sums,
    attention_kl,
    row_metrics,
    sequence_losses,
    zero_sums,
)
from rope_interp.interventions.results import (
    ExperimentResult,
    result_from_records,
    write_result_tables,
)
from rope_interp.interventions.run_store import (
    FORMAT_VERSION,
    code_fingerprint,
    condition_identity,
    json_default,
    load_record,
    record_key,
    write_record,
)
from rope_interp.loading.data import Corpus
from rope_interp.utils.fingerprint import model_fingerprint, sequence_ids, tokens_fingerprint


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


@dataclass(frozen=True)
class RunSettings:
    """How `run_experiment` runs, checked when made (a bad value raises `RopeInterpError`
    here, before any model runs). Every field that can change a number is part of the resume
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
        progress: show a progress bar (tokens of condition passes).
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

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_boot"):
            value = getattr(self, name)
            if not _is_integer(value) or value < 1:
                raise RopeInterpError(f"{name} must be a positive integer, got {value!r}.")
        if not _is_integer(self.seed):
            raise RopeInterpError(f"seed must be an integer, got {self.seed!r}.")
        if self.pattern_dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise RopeInterpError(
                f"pattern_dtype must be a floating dtype, got {self.pattern_dtype!r}."
            )
        seconds = self.checkpoint_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise RopeInterpError(f"checkpoint_seconds must be a number ≥ 0, got {seconds!r}.")

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


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# Callers already told that their keyword arguments are deprecated (each is told once).
_WARNED: set[str] = set()


def settings_from_keywords(
    settings: RunSettings | None,
    keywords: dict[str, Any],
    caller: str,
    accepted: dict[str, str] | None = None,
) -> RunSettings:
    """The `RunSettings` of a call that may still pass its fields as keyword arguments (the
    older form of `run_experiment` and `build_report`): `settings` alone, or one built from
    `keywords` with a `DeprecationWarning` once per caller. `accepted` maps each keyword the
    caller took to its field (default: every field, by its name). Both at once is an error,
    never one silently winning over the other."""
    if accepted is None:
        accepted = {f.name: f.name for f in dataclasses.fields(RunSettings)}
    unknown = sorted(set(keywords) - set(accepted))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {unknown}")
    if not keywords:
        return settings if settings is not None else RunSettings()
    if settings is not None:
        raise RopeInterpError(
            f"{caller}: pass either settings=RunSettings(...) or the keyword arguments "
            f"{sorted(keywords)}, not both (they would disagree)."
        )
    if caller not in _WARNED:
        _WARNED.add(caller)
        warnings.warn(
            f"{caller}({', '.join(f'{k}=...' for k in sorted(keywords))}) is deprecated; pass "
            f"settings=RunSettings(...) instead.",
            DeprecationWarning,
            stacklevel=3,
        )
    values = {accepted[k]: v for k, v in keywords.items()}
    if values.get("pattern_dtype", torch.float32) is None:  # the older default
        values["pattern_dtype"] = torch.float32
    return RunSettings(**values)


class _Forward:
    """The model's forward from a layer, with the unembedding's transposed weight made
    contiguous once (TransformerLens copies it on every call: ~25 % of a SmolLM2 forward on
    CPU). Same op on the same values, so logits equal `model(...)` bit for bit; hooks on
    `ln_final` and `unembed.hook_in/hook_out` still fire."""

    def __init__(self, model: HostModel, fast: bool = True):
        self.model = model
        unembed = getattr(model, "unembed", None)
        self.weight = None
        if (
            fast
            and unembed is not None
            and type(unembed).__name__ == "Unembed"
            and hasattr(unembed, "W_U")
        ):
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


@dataclass
class _Run:
    """What every step of one `run_experiment` call shares."""

    model: Any
    settings: RunSettings
    forward: _Forward
    batches: tuple[Tensor, ...]
    sequence_ids: list[str]
    store: Path | None  # where records go (None: kept in memory only)
    records: dict[str, dict]  # condition name → its finished record


def run_experiment(
    model: HostModel,
    conditions: Sequence[Condition],
    tokens: Corpus | Tensor,
    out_dir: str | Path | None = None,
    *,
    settings: RunSettings | None = None,
    **deprecated: Any,
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
        settings: a `RunSettings` (batch size, bootstrap, seed, attention, progress, ...;
            default `RunSettings()`).
        **deprecated: the fields of `RunSettings` as keyword arguments (`batch_size=8`,
            `n_boot=...`, `progress=False`, ...), the older form: still accepted with a
            `DeprecationWarning`; passing them with `settings` is an error.
    """
    settings = settings_from_keywords(settings, deprecated, "run_experiment")
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
    # Resume keys (weights, tokens, code, hook sources) only matter where a result can be
    # reused from disk: without a run folder none is computed.
    shared = (
        {
            "model": model_fingerprint(model),
            "tokens": tokens_fingerprint(token_tensor),
            "code": code_fingerprint(sys.modules[__name__], measures_module, ablation_module),
            "settings": settings.keyed(),
        }
        if store is not None
        else None
    )
    run = _Run(
        model,
        settings,
        _Forward(model, settings.fast_unembed),
        token_tensor.split(settings.batch_size),
        sequence_ids(token_tensor),
        store,
        records={},
    )
    states: list[_State] = []
    for condition in conditions:
        parts = {**shared, "condition": condition_identity(condition)} if shared else {}
        state = _State(
            condition,
            record_key(parts) if shared else None,
            parts,
            min(condition.first_layer(n_layers), n_layers),
            sums=zero_sums(n_layers, n_heads),
            base_sums=zero_sums(n_layers, n_heads),
        )
        saved = (
            load_record(store, condition.name, parts, (n_layers, n_heads), run.sequence_ids)
            if store is not None
            else None
        )
        if saved is not None and saved.get("complete"):
            run.records[condition.name] = saved
            continue
        if saved is not None:
            _restore(state, saved)
        states.append(state)

    if states:
        _run_states(run, states)

    ran = {s.condition.name for s in states}
    result = result_from_records(
        [run.records[n] for n in names], skipped=[n for n in names if n not in ran]
    )
    if out_dir is not None:
        write_result_tables(out_dir, result)
    return result


def _run_states(run: _Run, states: list[_State]) -> None:
    batches, settings = run.batches, run.settings
    first = min(s.batches_done for s in states)
    last_save = time.monotonic()
    # Progress in tokens of condition passes, so that the bar moves after every condition's
    # pass over a batch (counting batches, it sat at 0 % while 41 conditions ran the first one).
    sizes = [batch.numel() for batch in batches]
    with tqdm(
        total=sum(sum(sizes[s.batches_done :]) for s in states),
        desc=f"{len(states)} condition(s)",
        unit="tok",
        unit_scale=True,
        disable=not settings.progress,
    ) as bar:
        for index in range(first, len(batches)):
            batch = batches[index].to(run.model.cfg.device)
            active = [s for s in states if s.batches_done == index]
            if active:
                clean = _clean_batch(run, batch, {s.first_hooked for s in active})
                for state in active:
                    bar.set_postfix_str(state.condition.name, refresh=False)
                    _condition_batch(run, state, batch, clean)
                    bar.update(sizes[index])
                    state.batches_done += 1
                    if state.batches_done == len(batches):
                        run.records[state.condition.name] = _record(run, state)
                        if run.store is not None:
                            write_record(run.store, run.records[state.condition.name])
                del clean
            if (
                run.store is not None
                and time.monotonic() - last_save >= settings.checkpoint_seconds
            ):
                for state in states:
                    if 0 < state.batches_done < len(batches):
                        write_record(run.store, _record(run, state))
                last_save = time.monotonic()


def _clean_batch(run: _Run, batch: Tensor, start_layers: set[int]) -> _CleanBatch:
    model, settings = run.model, run.settings
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    first_needed = min(start_layers)
    sums = zero_sums(n_layers, n_heads)
    resid: dict[int, Tensor] = {}
    patterns: dict[int, Tensor] = {}
    target = settings.pattern_device

    def save_resid(x: Tensor, hook: HookPoint) -> None:
        resid[hook.layer()] = x.detach()

    def save_pattern(x: Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        add_to_sums(sums, layer, row_metrics(x))
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
    out: list[Tensor] = []
    run_batches(
        model,
        batch,
        hooks,
        progress=False,
        forward=lambda tokens: run.forward(tokens, 0),
        after_batch=lambda tokens, logits: out.append(sequence_losses(logits, tokens)),
    )
    losses = out[0].double().cpu()
    return _CleanBatch(losses, resid, patterns, sums, batch.shape[0] * (batch.shape[1] - 1))


def _condition_batch(run: _Run, state: _State, batch: Tensor, clean: _CleanBatch) -> None:
    n_layers = run.model.cfg.n_layers
    start = state.first_hooked if run.settings.reuse_prefix else 0
    sums = state.sums
    hooks = state.condition.all_hooks()

    def measure(x: Tensor, hook: HookPoint) -> None:
        layer = hook.layer()
        add_to_sums(sums, layer, row_metrics(x))
        base = clean.patterns[layer].to(x.device)
        add_to_sums(sums, layer, {"kl": attention_kl(base, x)})

    if run.settings.attention:
        hooks += [
            (f"blocks.{layer}.attn.hook_pattern", measure)
            for layer in range(state.first_hooked, n_layers)
        ]

    def forward(tokens: Tensor) -> Tensor | None:
        if state.first_hooked >= n_layers:
            return None  # touches no layer: identical to the clean model
        if start > 0:
            return run.forward(clean.resid[start], start)  # resume from the clean prefix
        return run.forward(tokens, 0)

    out: list[Tensor] = []
    run_batches(
        run.model,
        batch,
        hooks,
        progress=False,
        forward=forward,
        after_batch=lambda tokens, logits: out.append(
            clean.losses if logits is None else sequence_losses(logits, tokens).double().cpu()
        ),
    )
    losses = out[0]
    state.losses.extend(losses.tolist())
    state.losses_base.extend(clean.losses.tolist())
    for name in METRICS:
        state.base_sums[name] += clean.sums[name]
    state.rows += clean.rows
    state.n_tokens += batch.numel()


# ---- a condition's running totals ↔ its record on disk (run_store) ---
def _record(run: _Run, state: _State) -> dict:
    condition, settings = state.condition, run.settings
    return {
        "format": FORMAT_VERSION,
        "name": condition.name,
        "key": state.key,
        "parts": state.parts,
        "complete": state.batches_done == len(run.batches),
        "batches_done": state.batches_done,
        "n_batches": len(run.batches),
        "describe": json.loads(json.dumps(condition.describe(), default=json_default)),
        "first_layer": state.first_hooked,
        "attention": settings.attention,
        "n_boot": settings.n_boot,
        "seed": settings.seed,
        "model_name": str(getattr(run.model.cfg, "model_name", "") or ""),
        "sequence_ids": list(run.sequence_ids[: len(state.losses)]),
        "losses": list(state.losses),
        "losses_base": list(state.losses_base),
        "rows": state.rows,
        "n_tokens": state.n_tokens,
        "sums": {m: v.tolist() for m, v in state.sums.items()},
        "base_sums": {m: v.tolist() for m, v in state.base_sums.items()},
    }


def _restore(state: _State, saved: dict) -> None:
    state.batches_done = int(saved["batches_done"])
    state.losses = [float(v) for v in saved["losses"]]
    state.losses_base = [float(v) for v in saved["losses_base"]]
    state.rows = int(saved["rows"])
    state.n_tokens = int(saved["n_tokens"])
    state.sums = {m: np.array(saved["sums"][m], dtype=np.float64) for m in METRICS}
    state.base_sums = {m: np.array(saved["base_sums"][m], dtype=np.float64) for m in METRICS}
