"""Positional heads (claim set B): which heads attend to themselves (Δ = 0), to the previous
token (Δ = 1) or to another fixed offset, and which rotary pairs build that pattern.

For a query at m and the key at n = m − Δ, the *margin* of the offset is the score there
minus the mean score over the query's causal keys 0..m:

    margin(m, Δ) = s(m, m−Δ) − mean_{n≤m} s(m, n) = Σ_i margin_i(m, Δ) + margin_pass(m, Δ),

an exact split over pairs because each score is the sum of the per-pair terms
|z^q_i||z^k_i|cos(α_i + Δθ_i)/scale of `pairs.score_contributions` plus the pass-through term
(computed here with cumulative sums over keys, O(pos) per query; the tests check equality with
`score_contributions`). A pair "builds" the pattern when its margin_i is large and positive.
Averages are over queries m ≥ max(Δ, 1) (query 0 sees only itself) and all sequences.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rope_interp.analysis._common import (
    bands,
    check_offsets,
    pair_margin_rows,
    rotated_pass,
)
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.host import HostModel


@dataclass(frozen=True)
class PositionalHeads:
    """`heads`: one row per (layer, head, offset); `pairs`: one row per (layer, head, offset,
    pair). Column meanings are in `positional_heads`."""

    heads: pd.DataFrame
    pairs: pd.DataFrame


def positional_heads(
    model: HostModel,
    batches: Iterable[Tensor],
    offsets: Sequence[int] = (0, 1, 2),
    layers: int | Iterable[int] | None = None,
    band_fraction: float = 0.25,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> PositionalHeads:
    """Mean attention at fixed offsets per head, joined with the head's high-frequency share and
    the per-pair decomposition of its score margin at those offsets.

    Args:
        batches: token batches `Int[Tensor, "batch pos"]` (e.g. `corpus.batches(4)`).
        offsets: Δ = m − n values (0: diagonal, 1: previous token).
        band_fraction: the high / low band is the first / last fraction of pairs.
        spec: the model's spec, bound once by the caller (default: read from `model`).

    Returns `PositionalHeads`:
        heads: layer, head, offset, attn (mean A[m, m−Δ]), margin (mean total margin),
            margin_pass, top_pair (largest mean margin_i), top_pair_margin, high_band_margin /
            low_band_margin (Σ of margin_i over the band), high_margin_fraction (high-band
            margin / Σ_i |margin_i|), q_high_share, k_high_share, qk_high_share (share of
            E‖z_i‖ — for qk of E‖z^q_i‖·E‖z^k_i‖ — in the high band; uniform = band fraction).
        pairs: layer, head, offset, pair, theta, score (mean per-pair score at the offset),
            margin (mean margin_i), margin_fraction (margin_i / Σ_j |margin_j|).
    """
    offs = check_offsets(offsets)
    spec = spec_for(model, spec)
    acc: dict[int, dict[str, Tensor]] = {}

    def on_layer(layer, pattern, zq, zk, q_pass, k_pass):
        n_batch, n_pos, n_heads, n_pairs = zq.shape
        if layer not in acc:
            cpu64 = dict(dtype=torch.float64, device="cpu")  # sums of values moved off the device
            acc[layer] = {
                "attn": torch.zeros(n_heads, len(offs), **cpu64),
                "score": torch.zeros(n_heads, len(offs), n_pairs, **cpu64),
                "margin": torch.zeros(n_heads, len(offs), n_pairs, **cpu64),
                "margin_pass": torch.zeros(n_heads, len(offs), **cpu64),
                "count": torch.zeros(len(offs), **cpu64),
                "q_norm": torch.zeros(n_heads, n_pairs, **cpu64),
                "k_norm": torch.zeros(n_heads, n_pairs, **cpu64),
                "tokens": torch.zeros((), **cpu64),
            }
        a = acc[layer]
        # Mean per-pair score over the causal keys 0..m of query m, via a cumulative sum of keys.
        n_keys = torch.arange(1, n_pos + 1, dtype=torch.float64, device=zq.device)
        row_mean = (zq * zk.cumsum(1).conj()).real / n_keys[None, :, None, None]
        row_mean_pass = (q_pass * k_pass.cumsum(1)).sum(-1) / n_keys[None, :, None]
        for j, d in enumerate(offs):
            m = torch.arange(max(d, 1), n_pos, device=zq.device)
            if not len(m):
                continue
            at = (zq[:, m] * zk[:, m - d].conj()).real  # [batch, m, head, pair]
            at_pass = (q_pass[:, m] * k_pass[:, m - d]).sum(-1)  # [batch, m, head]
            a["attn"][:, j] += pattern[:, :, m, m - d].sum((0, 2)).cpu()
            a["score"][:, j] += at.sum((0, 1)).cpu()
            a["margin"][:, j] += (at - row_mean[:, m]).sum((0, 1)).cpu()
            a["margin_pass"][:, j] += (at_pass - row_mean_pass[:, m]).sum((0, 1)).cpu()
            a["count"][j] += n_batch * len(m)
        a["q_norm"] += zq.abs().sum((0, 1)).cpu()
        a["k_norm"] += zk.abs().sum((0, 1)).cpu()
        a["tokens"] += n_batch * n_pos

    chosen, _ = rotated_pass(model, spec, batches, layers, on_layer, "positional heads", progress)
    high, low = bands(spec.n_pairs, band_fraction)
    head_rows, pair_rows = [], []
    for layer in chosen:
        a = acc[layer]
        q_norm = a["q_norm"] / a["tokens"]
        k_norm = a["k_norm"] / a["tokens"]  # keys are already expanded to query heads
        shares = {
            name: (x[:, high].sum(-1) / x.sum(-1).clamp(min=1e-300))
            for name, x in (("q", q_norm), ("k", k_norm), ("qk", q_norm * k_norm))
        }
        for j, d in enumerate(offs):
            count = max(float(a["count"][j]), 1.0)
            margin = a["margin"][:, j] / count
            score = a["score"][:, j] / count
            abs_total = margin.abs().sum(-1).clamp(min=1e-300)
            for h in range(spec.n_heads):
                top = int(margin[h].argmax())
                head_rows.append(
                    {
                        "layer": layer,
                        "head": h,
                        "offset": d,
                        "attn": float(a["attn"][h, j] / count),
                        "margin": float(margin[h].sum() + a["margin_pass"][h, j] / count),
                        "margin_pass": float(a["margin_pass"][h, j] / count),
                        "top_pair": top,
                        "top_pair_margin": float(margin[h, top]),
                        "high_band_margin": float(margin[h, high].sum()),
                        "low_band_margin": float(margin[h, low].sum()),
                        "high_margin_fraction": float(margin[h, high].sum() / abs_total[h]),
                        "q_high_share": float(shares["q"][h]),
                        "k_high_share": float(shares["k"][h]),
                        "qk_high_share": float(shares["qk"][h]),
                    }
                )
                pair_rows += pair_margin_rows(spec, layer, h, score, margin, abs_total, offset=d)
    return PositionalHeads(pd.DataFrame(head_rows), pd.DataFrame(pair_rows))
