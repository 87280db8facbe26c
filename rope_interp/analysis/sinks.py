"""Attention sinks (Gu et al., ICLR 2025; Jonasson's rotary offset features): how much attention
each head puts on the first token, and which rotary pairs make the first-token score win.

Importance of key position k (Gu et al.): mean over queries i ≥ k of A[i, k]; a head has a sink
when the first token's importance exceeds `threshold` (0.3 in the paper). For k = 0 every query
counts, including query 0 (which can only attend to itself).

The first-token *margin* of query m ≥ 1 is s(m, 0) − mean_{1≤n≤m} s(m, n): how far the first key
beats the other keys. It splits exactly over rotary pairs (the terms of
`pairs.score_contributions`, summed over keys with cumulative sums; the tests check equality)
plus the pass-through dims; a pair "makes the sink" when its margin_i is large and positive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rope_interp.analysis._common import bands, pair_margin_rows, rotated_pass
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel


@dataclass(frozen=True)
class AttentionSinks:
    """`heads`: one row per (layer, head); `pairs`: one row per (layer, head, pair)."""

    heads: pd.DataFrame
    pairs: pd.DataFrame


def attention_sinks(
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    threshold: float = 0.3,
    band_fraction: float = 0.25,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> AttentionSinks:
    """First-token attention, Gu et al.'s importance and sink flag, and the per-pair
    decomposition of the first-token score margin.

    Args:
        batches: token batches `Int[Tensor, "batch pos"]` with pos ≥ 2.
        threshold: sink if first-token importance > threshold.
        spec: the model's spec, bound once by the caller (default: read from `model`).

    Returns `AttentionSinks`:
        heads: layer, head, first_mass (mean A[m, 0] over queries m ≥ 1), importance (Gu: mean
            A[i, 0] over all queries i ≥ 0), is_sink, margin (mean first-token margin),
            margin_pass, top_pair, top_pair_margin, low_band_margin, high_band_margin,
            low_margin_fraction (low-band margin / Σ_i |margin_i|).
        pairs: layer, head, pair, theta, score (mean first-token score term of the pair over
            queries m ≥ 1), margin (mean margin_i), margin_fraction (margin_i / Σ_j |margin_j|).
    """
    spec = spec_for(model, spec)
    acc: dict[int, dict[str, Tensor]] = {}

    def on_layer(layer, pattern, zq, zk, q_pass, k_pass):
        n_batch, n_pos, n_heads, n_pairs = zq.shape
        if n_pos < 2:
            raise RopeInterpError("Sequences must have at least 2 tokens to measure sinks.")
        if layer not in acc:
            acc[layer] = {
                "first_mass": torch.zeros(n_heads, dtype=torch.float64, device="cpu"),
                "importance": torch.zeros(n_heads, dtype=torch.float64, device="cpu"),
                "score": torch.zeros(n_heads, n_pairs, dtype=torch.float64, device="cpu"),
                "margin": torch.zeros(n_heads, n_pairs, dtype=torch.float64, device="cpu"),
                "margin_pass": torch.zeros(n_heads, dtype=torch.float64, device="cpu"),
                "queries": torch.zeros((), dtype=torch.float64, device="cpu"),
                "sequences": torch.zeros((), dtype=torch.float64, device="cpu"),
            }
        a = acc[layer]
        first = pattern[:, :, :, 0]  # [batch, head, qpos]
        a["importance"] += first.mean(-1).sum(0).cpu()
        a["first_mass"] += first[:, :, 1:].sum((0, 2)).cpu()
        # Queries m ≥ 1: the first key's term and the mean term over the other keys 1..m.
        n_other = torch.arange(1, n_pos, dtype=torch.float64, device=zq.device)
        others = (zk.cumsum(1)[:, 1:] - zk[:, :1]) / n_other[None, :, None, None]
        others_pass = (k_pass.cumsum(1)[:, 1:] - k_pass[:, :1]) / n_other[None, :, None, None]
        first_term = (zq[:, 1:] * zk[:, :1].conj()).real  # [batch, m, head, pair]
        other_term = (zq[:, 1:] * others.conj()).real
        first_pass = (q_pass[:, 1:] * k_pass[:, :1]).sum(-1)
        other_pass = (q_pass[:, 1:] * others_pass).sum(-1)
        a["score"] += first_term.sum((0, 1)).cpu()
        a["margin"] += (first_term - other_term).sum((0, 1)).cpu()
        a["margin_pass"] += (first_pass - other_pass).sum((0, 1)).cpu()
        a["queries"] += n_batch * (n_pos - 1)
        a["sequences"] += n_batch

    chosen, _ = rotated_pass(model, spec, batches, layers, on_layer, "sinks", progress)
    high, low = bands(spec.n_pairs, band_fraction)
    head_rows, pair_rows = [], []
    for layer in chosen:
        a = acc[layer]
        nq = float(a["queries"])
        margin = a["margin"] / nq
        score = a["score"] / nq
        abs_total = margin.abs().sum(-1).clamp(min=1e-300)
        importance = a["importance"] / a["sequences"]
        for h in range(spec.n_heads):
            top = int(margin[h].argmax())
            head_rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "first_mass": float(a["first_mass"][h] / nq),
                    "importance": float(importance[h]),
                    "is_sink": bool(importance[h] > threshold),
                    "margin": float(margin[h].sum() + a["margin_pass"][h] / nq),
                    "margin_pass": float(a["margin_pass"][h] / nq),
                    "top_pair": top,
                    "top_pair_margin": float(margin[h, top]),
                    "low_band_margin": float(margin[h, low].sum()),
                    "high_band_margin": float(margin[h, high].sum()),
                    "low_margin_fraction": float(margin[h, low].sum() / abs_total[h]),
                }
            )
            pair_rows += pair_margin_rows(spec, layer, h, score, margin, abs_total)
    return AttentionSinks(pd.DataFrame(head_rows), pd.DataFrame(pair_rows))
