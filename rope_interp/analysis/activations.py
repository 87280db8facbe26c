"""Massive activations (Sun et al., 2024): residual-stream entries far larger than all others,
above an absolute bound (100) *and* about 1000× the layer's median magnitude. They sit in a
few fixed feature dimensions, at a few tokens (the first token, delimiters), and act as biases
that attention sinks build on.

Read at `blocks.{layer}.hook_resid_post`. The rule is applied per batch: an entry h of a layer
is massive when |h| > max(min_value, min_ratio · median |h|), the median taken over every
(sequence, position, dimension) entry of that layer in the batch, so that one streaming pass
suffices (the median of a batch of a few thousand tokens is stable; the table reports the mean
of the per-batch medians).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel


@dataclass
class MassiveActivations:
    """`layers`: one row per layer: max_abs, median_abs (mean of the per-batch medians), ratio
    (max_abs / median_abs), n_massive (entries over the threshold), n_tokens (tokens with at
    least one), first_position_share (of the massive entries, the share at position 0), dims
    (the feature dimensions with massive entries, most frequent first). `top`: the `top_k`
    largest |h| per layer: layer, rank, value (signed), abs, sequence, position, dim, token."""

    layers: pd.DataFrame
    top: pd.DataFrame
    min_value: float
    min_ratio: float


class _LayerAccumulator:
    """Running totals of one layer over batches (all on the CPU, a few numbers each)."""

    def __init__(self, d_model: int, top_k: int):
        self.max_abs = 0.0
        self.medians: list[float] = []
        self.n_massive = 0
        self.n_tokens = 0
        self.n_first = 0
        self.per_dim = torch.zeros(d_model, dtype=torch.long, device="cpu")
        self.top_k = top_k
        # [|h|, h, sequence, position, dim, token id (filled in after the batch)], largest first
        self.top: list[list] = []

    def add(self, h: Tensor, first_sequence: int, min_value: float, min_ratio: float) -> None:
        """Fold in one batch `[batch, pos, d_model]` of this layer's residual stream, whose
        first sequence has index `first_sequence` in the corpus."""
        magnitude = h.abs()  # [batch, pos, d_model]
        median = float(magnitude.median())
        massive = magnitude > max(min_value, min_ratio * median)
        self.medians.append(median)
        self.max_abs = max(self.max_abs, float(magnitude.max()))
        self.n_massive += int(massive.sum())
        self.n_tokens += int(massive.any(-1).sum())
        self.n_first += int(massive[:, 0].sum())
        self.per_dim += massive.sum((0, 1)).cpu()
        k = min(self.top_k, magnitude.numel())
        values, flat = magnitude.flatten().topk(k)
        batch_i, pos_i, dim_i = torch.unravel_index(flat, magnitude.shape)
        signed = h[batch_i, pos_i, dim_i]
        for v, s, b, p, d in zip(
            values.cpu().tolist(),
            signed.cpu().tolist(),
            batch_i.cpu().tolist(),
            pos_i.cpu().tolist(),
            dim_i.cpu().tolist(),
            strict=True,
        ):
            self.top.append([v, s, first_sequence + b, p, d, None])
        self.top = sorted(self.top, key=lambda row: -row[0])[: self.top_k]

    def name_tokens(self, tokens: Tensor, first_sequence: int) -> None:
        """Fill in the token ids of the entries that the batch `tokens` just added."""
        for entry in self.top:
            if entry[5] is None:
                entry[5] = int(tokens[entry[2] - first_sequence, entry[3]])


def massive_activations(
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    min_value: float = 100.0,
    min_ratio: float = 1000.0,
    top_k: int = 8,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> MassiveActivations:
    """Massive activations of the residual stream after each layer (see the module docstring
    for the rule). `batches`: `Int[Tensor, "batch pos"]` token batches; `spec`: the model's
    spec, bound once by the caller (default: read from `model`)."""
    if not min_value >= 0 or not min_ratio >= 0:
        raise RopeInterpError(
            f"min_value and min_ratio must be ≥ 0, got {min_value!r} and {min_ratio!r}."
        )
    if not isinstance(top_k, int) or top_k < 1:
        raise RopeInterpError(f"top_k must be a positive integer, got {top_k!r}.")
    chosen = spec_for(model, spec).resolve_layers(layers)
    acc = {layer: _LayerAccumulator(model.cfg.d_model, top_k) for layer in chosen}

    seen = {"sequences": 0}

    def record(tensor, layer):
        acc[layer].add(tensor.detach().float(), seen["sequences"], min_value, min_ratio)

    def after_batch(tokens, _):
        for a in acc.values():
            a.name_tokens(tokens.cpu(), seen["sequences"])
        seen["sequences"] += tokens.shape[0]

    hooks = [
        (
            f"blocks.{layer}.hook_resid_post",
            lambda t, hook, layer=layer: record(t, layer),
        )
        for layer in chosen
    ]
    run_batches(model, batches, hooks, "massive activations", progress, after_batch=after_batch)
    return MassiveActivations(
        layers=pd.DataFrame([_layer_row(layer, a) for layer, a in acc.items()]),
        top=pd.DataFrame(_top_rows(model, acc)),
        min_value=float(min_value),
        min_ratio=float(min_ratio),
    )


def _layer_row(layer: int, a: _LayerAccumulator) -> dict:
    median = sum(a.medians) / len(a.medians)
    order = torch.argsort(a.per_dim, descending=True, stable=True)
    dims = tuple(int(d) for d in order if a.per_dim[d] > 0)
    return {
        "layer": layer,
        "max_abs": a.max_abs,
        "median_abs": median,
        "ratio": a.max_abs / median if median > 0 else float("inf"),
        "n_massive": a.n_massive,
        "n_tokens": a.n_tokens,
        "first_position_share": a.n_first / a.n_massive if a.n_massive else float("nan"),
        "dims": dims,
    }


def _top_rows(model: HostModel, acc: dict[int, _LayerAccumulator]) -> list[dict]:
    tokenizer = getattr(model, "tokenizer", None)
    rows = []
    for layer, a in acc.items():
        for rank, (magnitude, value, sequence, position, dim, token) in enumerate(a.top):
            rows.append(
                {
                    "layer": layer,
                    "rank": rank,
                    "value": value,
                    "abs": magnitude,
                    "sequence": sequence,
                    "position": position,
                    "dim": dim,
                    "token": tokenizer.decode([token]) if tokenizer is not None else str(token),
                }
            )
    return rows
