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

Efficiency: the clean model runs once per batch; its residual stream `blocks.{l}.hook_resid_pre`
is kept for every layer l where a condition starts, and each condition resumes from there with
`model(resid, start_at_layer=l)`. Layers before l are identical to the clean run by
construction (their KL is 0 and their metrics are the clean ones).

Resumable: with `out_dir`, each condition's rows are written (atomically) as it finishes, and a
re-run with the same model, tokens and condition skips it.
"""

from __future__ import annotations

import hashlib
import json
import re
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
from rope_interp.capture import Hook
from rope_interp.data import Corpus
from rope_interp.errors import RopeInterpError

METRICS = ("kl", "diag", "prev", "first", "entropy", "max_weight")
_ROW_METRICS = METRICS[1:]
_FORMAT_VERSION = 1


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
    summary: pd.DataFrame
    heads: pd.DataFrame
    skipped: list[str] = field(default_factory=list)


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


class _Accumulator:
    """Per-(layer, head) sums of the attention metrics over batches."""

    def __init__(self, n_layers: int, n_heads: int):
        self.sums = {
            m: torch.zeros(n_layers, n_heads, dtype=torch.float64, device="cpu") for m in METRICS
        }
        self.rows = 0

    def add(self, layer: int, values: dict[str, Tensor]) -> None:
        for name, value in values.items():
            self.sums[name][layer] += value.double().cpu()


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
) -> ExperimentResult:
    """Run every condition on `tokens` and measure it against the clean model.

    Args:
        conditions: uniquely named `Condition`s.
        tokens: a `Corpus` or `Int[Tensor, "batch pos"]` (sequences of equal length).
        out_dir: where per-condition results go (resume: finished conditions are skipped).
        attention: also measure attention (KL, positional scores, first-token mass, sharpness);
            keeps the clean patterns of the affected layers in memory
            (layers × sequences × heads × pos² × 4 bytes, or 2 with float16).
        reuse_prefix: resume each condition from the cached clean residual stream at its first
            hooked layer (False: full forward passes, for comparison).
        pattern_dtype: storage of the clean patterns for the KL; default float32 when they
            take ≤ 2 GiB, else float16 (KL noise floor ~3e-5 nats).
        fast_unembed: unembed with a once-made contiguous copy of W_U.T (bit-identical logits;
            False: call `model(...)` to the end, as TransformerLens does).
    """
    token_tensor = tokens.tokens if isinstance(tokens, Corpus) else tokens
    if not isinstance(token_tensor, Tensor) or token_tensor.ndim != 2:
        raise RopeInterpError("tokens must be a Corpus or an integer tensor [batch, pos].")
    if token_tensor.shape[1] < 2:
        raise RopeInterpError("Sequences need at least 2 tokens to measure a next-token loss.")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise RopeInterpError(f"Condition names must be unique; repeated: {dupes}.")
    cfg = model.cfg
    n_layers = cfg.n_layers
    fingerprint = _fingerprint(model, token_tensor)
    store = Path(out_dir) / "conditions" if out_dir is not None else None
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)

    done: dict[str, dict] = {}
    todo: list[Condition] = []
    for condition in conditions:
        key = _condition_key(condition, fingerprint, attention)
        saved = _load(store, condition.name, key) if store is not None else None
        if saved is not None:
            done[condition.name] = saved
        else:
            todo.append(condition)

    device = cfg.device
    batches = [b.to(device) for b in token_tensor.split(batch_size)]
    starts = {c.name: min(c.first_layer(n_layers), n_layers) for c in todo}
    forward = _Forward(model, fast_unembed) if todo else None
    if pattern_dtype is None:
        first = min(starts.values(), default=n_layers)
        n_seq, pos = token_tensor.shape
        size = (n_layers - first) * n_seq * cfg.n_heads * pos * pos * 4
        pattern_dtype = torch.float32 if size <= 2 * 2**30 else torch.float16
    clean = (
        _clean_pass(
            model, batches, set(starts.values()), attention, progress, pattern_dtype, forward
        )
        if todo
        else None
    )

    bar = tqdm(todo, desc="conditions", disable=not progress)
    for condition in bar:
        bar.set_postfix_str(condition.name)
        start = starts[condition.name] if reuse_prefix else 0
        record = _run_condition(
            model,
            condition,
            batches,
            clean,
            start,
            starts[condition.name],
            attention,
            n_boot,
            seed,
            progress,
            forward,
        )
        record["key"] = _condition_key(condition, fingerprint, attention)
        if store is not None:
            _atomic_write_json(store / f"{_slug(condition.name)}.json", record)
        done[condition.name] = record

    summary = pd.DataFrame([done[n]["summary"] for n in names])
    heads = pd.DataFrame([row for n in names for row in done[n]["heads"]])
    if out_dir is not None:
        _atomic_write_csv(Path(out_dir) / "summary.csv", summary)
        _atomic_write_csv(Path(out_dir) / "heads.csv", heads)
    ran = {c.name for c in todo}
    skipped = [name for name in names if name not in ran]
    return ExperimentResult(summary=summary, heads=heads, skipped=skipped)


@dataclass
class _Clean:
    losses: Tensor  # [n_sequences]
    resid: dict[tuple[int, int], Tensor]  # (batch index, layer) → resid_pre
    patterns: dict[tuple[int, int], Tensor]  # (batch index, layer) → float16 pattern
    metrics: _Accumulator
    first_needed: int


def _clean_pass(
    model,
    batches,
    start_layers: set[int],
    attention: bool,
    progress: bool,
    dtype: torch.dtype,
    forward: _Forward,
) -> _Clean:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    first_needed = min(start_layers)
    metrics = _Accumulator(n_layers, n_heads)
    resid: dict = {}
    patterns: dict = {}
    losses = []
    for index, batch in enumerate(tqdm(batches, desc="clean model", disable=not progress)):
        hooks: list[Hook] = []

        def save_resid(x: Tensor, hook: HookPoint, index=index) -> None:
            resid[(index, hook.layer())] = x.detach()

        def save_pattern(x: Tensor, hook: HookPoint, index=index) -> None:
            layer = hook.layer()
            metrics.add(layer, row_metrics(x))
            if layer >= first_needed:
                patterns[(index, layer)] = x.detach().to(dtype, copy=True)

        for layer in sorted(start_layers):
            if 0 < layer < n_layers:
                hooks.append((f"blocks.{layer}.hook_resid_pre", save_resid))
        if attention:
            hooks += [
                (f"blocks.{layer}.attn.hook_pattern", save_pattern) for layer in range(n_layers)
            ]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            logits = forward(batch, 0)
        losses.append(sequence_losses(logits, batch).double().cpu())
        metrics.rows += batch.shape[0] * (batch.shape[1] - 1)
    return _Clean(torch.cat(losses), resid, patterns, metrics, first_needed)


def _run_condition(
    model,
    condition,
    batches,
    clean: _Clean,
    start,
    first_hooked,
    attention,
    n_boot,
    seed,
    progress,
    forward: _Forward,
) -> dict:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    metrics = _Accumulator(n_layers, n_heads)
    losses = []
    offset = 0
    for index, batch in enumerate(
        tqdm(batches, desc=condition.name, leave=False, disable=not progress)
    ):
        hooks = condition.all_hooks()

        def measure(x: Tensor, hook: HookPoint, index=index) -> None:
            layer = hook.layer()
            metrics.add(layer, row_metrics(x))
            metrics.add(layer, {"kl": attention_kl(clean.patterns[(index, layer)], x)})

        if attention:
            hooks += [
                (f"blocks.{layer}.attn.hook_pattern", measure)
                for layer in range(max(first_hooked, clean.first_needed), n_layers)
            ]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            if start >= n_layers:
                logits = None
            elif start > 0:
                logits = forward(clean.resid[(index, start)], start)
            else:
                logits = forward(batch, 0)
        if logits is None:  # touches no layer: identical to the clean model
            losses.append(clean.losses[offset : offset + len(batch)])
        else:
            losses.append(sequence_losses(logits, batch).double().cpu())
        offset += len(batch)
        metrics.rows += batch.shape[0] * (batch.shape[1] - 1)
    loss = torch.cat(losses).numpy()
    base = clean.losses.numpy()
    diff = loss - base
    low, high = bootstrap_ci(diff, n_boot, seed)
    summary = {
        "condition": condition.name,
        **condition.describe(),
        "first_layer": min(condition.first_layer(n_layers), n_layers),
        "n_sequences": len(diff),
        "n_tokens": int(sum(b.numel() for b in batches)),
        "loss_base": float(base.mean()),
        "loss": float(loss.mean()),
        "delta_loss": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
    }
    head_rows = []
    if attention:
        rows = clean.metrics.rows
        measured_from = max(first_hooked, clean.first_needed)
        for layer in range(n_layers):
            for head in range(n_heads):
                row = {"condition": condition.name, "layer": layer, "head": head}
                affected = layer >= measured_from
                for name in METRICS:
                    base_value = (
                        0.0 if name == "kl" else float(clean.metrics.sums[name][layer, head])
                    )
                    value = float(metrics.sums[name][layer, head]) if affected else base_value
                    row[name] = value / rows
                    if name != "kl":
                        row[f"{name}_base"] = base_value / rows
                head_rows.append(row)
    return {"summary": summary, "heads": head_rows}


# ---- persistence ----------------------------------------------------------------------------
def _fingerprint(model, tokens: Tensor) -> str:
    digest = hashlib.sha256()
    digest.update(tokens.cpu().numpy().astype(np.int64).tobytes())
    cfg = model.cfg
    digest.update(repr((cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_vocab)).encode())
    with torch.no_grad():
        digest.update(repr(float(model.W_E.double().sum())).encode())
        digest.update(repr(float(model.blocks[-1].attn.W_Q.double().sum())).encode())
    return digest.hexdigest()[:20]


def _condition_key(condition: Condition, fingerprint: str, attention: bool) -> str:
    described = json.dumps(condition.describe(), sort_keys=True, default=str)
    if condition.intervention is not None:
        mask = condition.intervention.selection.mask.cpu().numpy().tobytes()
        described += hashlib.sha256(mask).hexdigest()
    text = f"{_FORMAT_VERSION}|{fingerprint}|{attention}|{condition.name}|{described}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _slug(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "condition"
    return f"{safe[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _load(store: Path, name: str, key: str) -> dict | None:
    path = store / f"{_slug(name)}.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if record.get("key") == key else None


def _atomic_write_json(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, default=_json_default))


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
