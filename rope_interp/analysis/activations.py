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

from rope_interp.analysis._common import batch_list, run_hooks, spec_of
from rope_interp.capturing import resolve_layers
from rope_interp.errors import RopeInterpError


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
        self.per_dim = torch.zeros(d_model, dtype=torch.long)
        self.top_k = top_k
        # (|h|, h, batch index, row in the batch, position, dim), largest first
        self.top: list[tuple[float, float, int, int, int, int]] = []

    def add(self, h: Tensor, min_value: float, min_ratio: float) -> None:
        """Fold in one batch `[batch, pos, d_model]` of this layer's residual stream."""
        batch_index = len(self.medians)
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
            self.top.append((v, s, batch_index, b, p, d))
        self.top = sorted(self.top, key=lambda row: -row[0])[: self.top_k]


def massive_activations(
    model,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    min_value: float = 100.0,
    min_ratio: float = 1000.0,
    top_k: int = 8,
    progress: bool = True,
) -> MassiveActivations:
    """Massive activations of the residual stream after each layer (see the module docstring
    for the rule). `batches`: `Int[Tensor, "batch pos"]` token batches."""
    if not min_value >= 0 or not min_ratio >= 0:
        raise RopeInterpError(
            f"min_value and min_ratio must be ≥ 0, got {min_value!r} and {min_ratio!r}."
        )
    if not isinstance(top_k, int) or top_k < 1:
        raise RopeInterpError(f"top_k must be a positive integer, got {top_k!r}.")
    chosen = resolve_layers(spec_of(model), layers)
    acc = {layer: _LayerAccumulator(model.cfg.d_model, top_k) for layer in chosen}

    def hooks_for():
        return [
            (
                f"blocks.{layer}.hook_resid_post",
                lambda t, hook, layer=layer: acc[layer].add(
                    t.detach().float(), min_value, min_ratio
                ),
            )
            for layer in chosen
        ]

    batches = batch_list(batches)
    run_hooks(model, batches, hooks_for, "massive activations", progress)
    return MassiveActivations(
        layers=pd.DataFrame([_layer_row(layer, a) for layer, a in acc.items()]),
        top=pd.DataFrame(_top_rows(model, acc, batches)),
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


def _top_rows(model, acc: dict[int, _LayerAccumulator], batches: list[Tensor]) -> list[dict]:
    tokenizer = getattr(model, "tokenizer", None)
    offsets = [0]
    for tokens in batches:
        offsets.append(offsets[-1] + tokens.shape[0])
    rows = []
    for layer, a in acc.items():
        for rank, (magnitude, value, batch_index, row, position, dim) in enumerate(a.top):
            token = int(batches[batch_index][row, position])
            rows.append(
                {
                    "layer": layer,
                    "rank": rank,
                    "value": value,
                    "abs": magnitude,
                    "sequence": offsets[batch_index] + row,
                    "position": position,
                    "dim": dim,
                    "token": tokenizer.decode([token]) if tokenizer is not None else str(token),
                }
            )
    return rows
