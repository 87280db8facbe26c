"""Loss and attention by position, at long context, for the clean model and each condition.

`length_sweep(model, tokens, conditions)` runs the clean model and every `Condition` (an
intervention such as p-RoPE or a zeroed band, or your own hooks) over the same `[batch, L]`
windows, and reduces, per log-spaced bucket of positions (`pairs.distance_buckets`: 0, 1, 2–3,
4–7, ...):

- `loss`: the next-token loss of the tokens predicted at those positions (the prediction made
  at position p is scored against token p + 1), its standard error over tokens, and for each
  condition the paired difference to the clean model (same tokens) with its standard error;
- `attention`: per layer, the mean entropy (nats) of the attention rows of the queries at those
  positions and their mean weight on the first token, averaged over heads.

The host runs every window whole (its eager attention holds each layer's `[head, L, L]`
pattern); rope-interp keeps per-bucket sums only. Windows longer than the model's context are
refused unless `allow_beyond_context=True`, and then only where the host can rotate beyond it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rope_interp.analysis.long_context import check_context_length
from rope_interp.core.pairs import bucket_index, distance_buckets
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import HooksDidNotFire, RopeInterpError
from rope_interp.host import HostModel
from rope_interp.interventions.experiment import Condition


@dataclass
class LengthSweep:
    """`loss`: one row per (condition, position bucket); `attention`: one row per (condition,
    layer, position bucket). Columns are documented in `length_sweep`."""

    loss: pd.DataFrame
    attention: pd.DataFrame


def length_sweep(
    model: HostModel,
    tokens: Tensor,
    conditions: Sequence[Condition] = (),
    per_octave: int = 1,
    batch_size: int = 1,
    allow_beyond_context: bool = False,
    *,
    spec: RotarySpec | None = None,
) -> LengthSweep:
    """Loss and attention entropy by position for the clean model and each condition.

    Args:
        tokens: `Int[Tensor, "batch pos"]` windows (pos ≥ 2).
        conditions: uniquely named `Condition`s (the clean model always runs, as "clean").
        per_octave: position buckets per doubling of the position.
        batch_size: windows per forward pass.
        spec: the model's `RotarySpec` where the caller has it (read from the model if not).

    Returns a `LengthSweep`. `loss` columns: condition, position_lo, position_hi (inclusive),
    n_tokens, mean_loss, se_loss, delta_loss (condition − clean on the same tokens; 0 for
    clean), se_delta. `attention` columns: condition, layer, position_lo, position_hi,
    n_queries, entropy (mean over heads and queries, nats), first (mean weight on token 0).
    """
    spec = spec_for(model, spec)
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2:
        raise RopeInterpError("tokens must be an integer tensor [batch, pos] with pos ≥ 2.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RopeInterpError(f"batch_size must be an integer ≥ 1, got {batch_size!r}.")
    names = ["clean", *(c.name for c in conditions)]
    if len(set(names)) != len(names):
        raise RopeInterpError(f"Condition names must be unique and not 'clean'; got {names}.")
    layers = list(range(spec.n_layers))
    length = int(tokens.shape[1])
    check_context_length(model, spec, layers, length, allow_beyond_context)
    edges = distance_buckets(length - 1, per_octave)
    buckets = bucket_index(torch.arange(length), edges)  # [pos]
    n_buckets = len(edges) - 1
    runs: list[tuple[str, list]] = [("clean", [])]
    runs += [(c.name, c.all_hooks()) for c in conditions]
    losses: dict[str, list[Tensor]] = {}
    attention: dict[str, np.ndarray] = {}
    for name, hooks in runs:
        sums = torch.zeros(spec.n_layers, 2, n_buckets, dtype=torch.float64)
        fired: set[int] = set()
        per_token = []
        for batch in tokens.split(batch_size):
            measure = _attention_hooks(layers, buckets, sums, fired)
            logits = _forward(model, batch, hooks + measure)
            per_token.append(_token_losses(logits, batch).cpu())
        if fired != set(layers):
            raise HooksDidNotFire(
                f"hook_pattern never fired at layers {sorted(set(layers) - fired)} of this "
                f"{type(model).__name__}, so their attention cannot be measured."
            )
        losses[name] = per_token
        attention[name] = sums.cpu().numpy()
    counts = torch.bincount(buckets, minlength=n_buckets).double().cpu().numpy()
    return LengthSweep(
        _loss_table(losses, buckets[:-1], edges, n_buckets),
        _attention_table(attention, counts * len(tokens), edges, spec.n_heads),
    )


def _forward(model: HostModel, batch: Tensor, hooks: list) -> Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.run_with_hooks(batch.to(device), fwd_hooks=hooks, return_type="logits")


def _token_losses(logits: Tensor, batch: Tensor, chunk: int = 512) -> Tensor:
    """Next-token cross-entropy of every prediction in float64 `[batch, pos - 1]` (small
    differences between conditions survive), a chunk of positions at a time (bounded memory)."""
    targets = batch[:, 1:].to(logits.device)
    out = []
    for start in range(0, targets.shape[1], chunk):
        part = logits[:, start : start + chunk].double().log_softmax(-1)
        out.append(-part.gather(-1, targets[:, start : start + chunk, None]).squeeze(-1))
    return torch.cat(out, dim=1)


def _attention_hooks(layers: Iterable[int], buckets: Tensor, sums: Tensor, fired: set) -> list:
    """Hooks adding each layer's per-bucket Σ entropy and Σ first-token weight (summed over
    heads and queries) into `sums[layer]`, and the layer into `fired`."""

    def hook_for(layer: int):
        def hook(pattern: Tensor, hook) -> None:
            fired.add(layer)
            rows = pattern.float()  # [batch, head, q, k]
            entropy = -torch.special.xlogy(rows, rows).sum(-1).sum((0, 1))  # [q]
            first = rows[..., 0].sum((0, 1))
            index = buckets.to(rows.device)
            for row, values in enumerate((entropy, first)):
                summed = torch.zeros(sums.shape[-1], device=rows.device, dtype=torch.float64)
                summed.index_add_(0, index, values.double())
                sums[layer, row] += summed.cpu()

        return hook

    return [(f"blocks.{layer}.attn.hook_pattern", hook_for(layer)) for layer in layers]


def _loss_table(losses, buckets: Tensor, edges: Tensor, n_buckets: int) -> pd.DataFrame:
    clean = torch.cat(losses["clean"]).double()  # [windows, pos - 1]
    rows = []
    for name, parts in losses.items():
        values = torch.cat(parts).double()
        delta = values - clean
        for b in range(n_buckets):
            chosen = buckets == b
            if not chosen.any():
                continue
            x, d = values[:, chosen].reshape(-1), delta[:, chosen].reshape(-1)
            rows.append(
                {
                    "condition": name,
                    "position_lo": int(edges[b]),
                    "position_hi": int(edges[b + 1]) - 1,
                    "n_tokens": x.numel(),
                    "mean_loss": float(x.mean()),
                    "se_loss": _standard_error(x),
                    "delta_loss": float(d.mean()),
                    "se_delta": _standard_error(d),
                }
            )
    return pd.DataFrame(rows)


def _attention_table(attention, counts: np.ndarray, edges: Tensor, n_heads: int):
    rows = []
    for name, sums in attention.items():
        for layer in range(sums.shape[0]):
            for b in np.flatnonzero(counts):
                rows.append(
                    {
                        "condition": name,
                        "layer": layer,
                        "position_lo": int(edges[b]),
                        "position_hi": int(edges[b + 1]) - 1,
                        "n_queries": int(counts[b]),
                        "entropy": sums[layer, 0, b] / (counts[b] * n_heads),
                        "first": sums[layer, 1, b] / (counts[b] * n_heads),
                    }
                )
    return pd.DataFrame(rows)


def _standard_error(values: Tensor) -> float:
    n = values.numel()
    return float(values.std(unbiased=True) / n**0.5) if n > 1 else float("nan")
