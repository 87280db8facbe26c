"""Which rotary pairs an intervention acts on: a `PairSelection`, a boolean
`[layer, head, pair]` mask over query heads, chosen by index, by frequency band, from the rows
of an analysis table, or at random like another selection (the controls).

    sel = select_band(spec, "high", k=4)        # the 4 highest-frequency pairs, every head
    control = select_random(spec, sel, seed=0)  # as many random pairs per (layer, head)

What to do to them is `rope_interp.interventions.ablation.Intervention`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError

__all__ = [
    "PairSelection",
    "band_size",
    "select_band",
    "select_frame",
    "select_pairs",
    "select_random",
]


@dataclass(frozen=True, eq=False)
class PairSelection:
    """A set of (layer, query head, pair) triples as a boolean `[layer, head, pair]` mask."""

    mask: Bool[Tensor, "layer head pair"]
    label: str = "custom"

    @property
    def n_selected(self) -> int:
        return int(self.mask.sum())

    def layers(self) -> list[int]:
        """Layers with at least one selected pair."""
        return [int(i) for i in self.mask.any(dim=(1, 2)).nonzero().flatten()]

    def to_frame(self) -> pd.DataFrame:
        """One row per selected (layer, head, pair)."""
        idx = self.mask.nonzero().cpu().numpy()
        return pd.DataFrame({"layer": idx[:, 0], "head": idx[:, 1], "pair": idx[:, 2]})

    def __or__(self, other: PairSelection) -> PairSelection:
        if self.mask.shape != other.mask.shape:
            raise RopeInterpError("Cannot combine selections made for different models.")
        return PairSelection(self.mask | other.mask, f"{self.label}|{other.label}")


def _empty(spec: RotarySpec) -> Tensor:
    return torch.zeros(spec.n_layers, spec.n_heads, spec.n_pairs, dtype=torch.bool, device="cpu")


def _layer_head_mask(
    spec: RotarySpec, layers: int | Iterable[int] | None, heads: int | Iterable[int] | None
) -> Tensor:
    """`[layer, head, 1]` mask of the chosen layers and heads (None = all)."""
    chosen_layers = spec.resolve_layers(layers)
    if heads is None:
        chosen_heads = list(range(spec.n_heads))
    else:
        chosen_heads = sorted({spec.check_head(int(h)) for h in _as_list(heads)})
        if not chosen_heads:
            raise RopeInterpError("heads is empty: name at least one head, or None for all.")
    # Selections are small metadata: built on the CPU, moved to the model's device when applied.
    mask = torch.zeros(spec.n_layers, spec.n_heads, 1, dtype=torch.bool, device="cpu")
    rows = torch.tensor(chosen_layers, device="cpu")[:, None]
    mask[rows, torch.tensor(chosen_heads, device="cpu")[None, :]] = True
    return mask


def _as_list(values: int | Iterable[int]) -> list[int]:
    if isinstance(values, int | np.integer):
        return [int(values)]
    return [int(v) for v in values]


def select_pairs(
    spec: RotarySpec,
    pairs: int | Iterable[int],
    layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None,
) -> PairSelection:
    """Pairs by index (0 = highest frequency) in the chosen layers and query heads."""
    chosen = sorted({spec.check_pair(int(p)) for p in _as_list(pairs)})
    pair_mask = torch.zeros(spec.n_pairs, dtype=torch.bool, device="cpu")
    pair_mask[chosen] = True
    mask = _layer_head_mask(spec, layers, heads) & pair_mask
    return PairSelection(mask, f"pairs {chosen}")


def band_size(n_pairs: int, k: int | None, fraction: float | None) -> int:
    """Number of pairs in a band given either `k` or `fraction` (floored, like Gemma's p-RoPE)."""
    if (k is None) == (fraction is None):
        raise RopeInterpError("Give exactly one of k (a number of pairs) or fraction (0..1).")
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise RopeInterpError(f"fraction must lie in [0, 1], got {fraction}.")
        return int(math.floor(fraction * n_pairs + 1e-9))
    if not isinstance(k, int) or not 0 <= k <= n_pairs:
        raise RopeInterpError(f"k must be an int in [0, {n_pairs}], got {k!r}.")
    return k


def select_band(
    spec: RotarySpec,
    end: Literal["high", "low"],
    k: int | None = None,
    fraction: float | None = None,
    layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None,
) -> PairSelection:
    """The `k` (or `fraction` of) highest- or lowest-frequency pairs. Pair 0 is the highest
    frequency in every model rope-interp supports, so "high" = pairs 0..k-1."""
    n = band_size(spec.n_pairs, k, fraction)
    if end == "high":
        chosen = list(range(n))
    elif end == "low":
        chosen = list(range(spec.n_pairs - n, spec.n_pairs))
    else:
        raise RopeInterpError(f"end must be 'high' or 'low', got {end!r}.")
    pair_mask = torch.zeros(spec.n_pairs, dtype=torch.bool, device="cpu")
    pair_mask[chosen] = True
    mask = _layer_head_mask(spec, layers, heads) & pair_mask
    return PairSelection(mask, f"{end} {n}")


def select_frame(spec: RotarySpec, frame: pd.DataFrame, label: str = "frame") -> PairSelection:
    """The (layer, head, pair) rows of an analysis table (e.g. flagged outlier pairs).

    `head` is a query head, unless the frame has a `kind` column and the row's kind is "k":
    then it is a KV head (as in `PairStats.to_frame`) and selects every query head reading it.
    """
    missing = {"layer", "head", "pair"} - set(frame.columns)
    if missing:
        raise RopeInterpError(
            f"The frame lacks column(s) {sorted(missing)}; it needs layer, head and pair "
            f"(it has {list(frame.columns)})."
        )
    mask = _empty(spec)
    for row in frame.itertuples(index=False):
        layer, head, pair = int(row.layer), int(row.head), int(row.pair)
        spec.check_layer(layer)
        spec.check_pair(pair)
        if getattr(row, "kind", "q") == "k":
            if not 0 <= head < spec.n_kv_heads:
                raise RopeInterpError(
                    f"KV head {head} is out of range: this model has KV heads "
                    f"0..{spec.n_kv_heads - 1}."
                )
            heads = list(range(head * spec.group_size, (head + 1) * spec.group_size))
        else:
            heads = [spec.check_head(head)]
        for h in heads:
            mask[layer, h, pair] = True
    return PairSelection(mask, label)


def select_random(spec: RotarySpec, like: PairSelection, seed: int = 0) -> PairSelection:
    """A seeded random control: in each (layer, head), as many random pairs as `like` selects
    there. Under GQA every query head of a KV group gets the same random pairs when `like`
    selects the same number for all of them (so k-side interventions stay valid)."""
    generator = torch.Generator().manual_seed(seed)
    counts = like.mask.sum(-1)
    mask = _empty(spec)
    for layer in range(spec.n_layers):
        for group in range(spec.n_kv_heads):
            heads = range(group * spec.group_size, (group + 1) * spec.group_size)
            group_counts = {int(counts[layer, h]) for h in heads}
            shared = torch.randperm(spec.n_pairs, generator=generator)
            for h in heads:
                n = int(counts[layer, h])
                if not n:
                    continue
                perm = (
                    shared
                    if len(group_counts) == 1
                    else torch.randperm(spec.n_pairs, generator=generator)
                )
                mask[layer, h, perm[:n]] = True
    return PairSelection(mask, f"random like {like.label} (seed {seed})")
