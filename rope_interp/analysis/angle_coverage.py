"""Which rotation angles each rotary pair reaches within the training context and at a longer
evaluated length, and where the partial-cycle boundary sits as the length grows.

In a window of L tokens the relative distance Δ = m − n runs over 0..L−1, so pair i's score
term cos(α + Δθ_i) sees relative angles in [0, θ_i(L−1)]. Training at context L_train (the
model's `n_ctx`, i.e. max_position_embeddings, unless given) showed pair i every angle of the
circle when θ_i(L_train−1) ≥ 2π; otherwise only the arc [0, θ_i(L_train−1)], and a longer
window reaches angles on the rest of the circle that training never produced — what breaks
low-frequency ("semantic") pairs beyond the training context.

The cycle conventions of docs/theory.md and `analysis.outliers` are kept for the boundary: a
pair is *partial-cycle* at L when θ_i·L < 2π (`RotarySpec.partial_cycle_mask`), the first such
pair is `RotarySpec.first_partial_pair` (for θ_i = base^(−2i/d) it is
⌈(d/2)·ln(L/2π)/ln(base)⌉) and the critical dimension (Liu et al.) is twice it. The largest
angle actually reached, θ_i(L−1), is what the coverage columns use; the two differ only for a
pair whose 2π lies between θ_i(L−1) and θ_i·L.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError

__all__ = ["angle_coverage", "cycle_boundaries"]

TWO_PI = 2 * math.pi


def angle_coverage(
    model_or_spec,
    length: int,
    train_context: int | None = None,
    layers: int | Iterable[int] | None = None,
) -> pd.DataFrame:
    """One row per (layer, pair): the angles pair i reaches in training and at `length`.

    Args:
        model_or_spec: a rotary model or its `RotarySpec`.
        length: the evaluated window length L (tokens).
        train_context: L_train (default the model's n_ctx).
        layers: layer indices (default all).

    Columns: layer, pair, theta, wavelength (2π/θ), train_context, length, train_max_angle
    (θ(L_train−1), radians), max_angle (θ(L−1)), train_cycles (θ·L_train/2π), cycles (θL/2π),
    train_partial_cycle (θ·L_train < 2π), partial_cycle (θL < 2π), train_full_circle
    (θ(L_train−1) ≥ 2π: training reached every angle), unseen_angle (radians of the circle
    reached at L but never in training: min(θ(L−1), 2π) − θ(L_train−1), at least 0),
    new_angles (unseen_angle > 0), coverage ("full": training covered the circle;
    "beyond": L reaches angles training never did; "within": L stays inside training's arc).
    """
    spec = model_or_spec if isinstance(model_or_spec, RotarySpec) else spec_for(model_or_spec)
    length = _check_length(length, "length")
    train = _check_length(spec.n_ctx if train_context is None else train_context, "train_context")
    chosen = spec.resolve_layers(layers)
    theta = spec.thetas[chosen].cpu().numpy()  # [layer, pair]
    layer, pair = np.meshgrid(chosen, np.arange(spec.n_pairs), indexing="ij")
    train_max, max_angle = theta * (train - 1), theta * (length - 1)
    full = train_max >= TWO_PI
    unseen = np.where(full, 0.0, np.clip(np.minimum(max_angle, TWO_PI) - train_max, 0.0, None))
    coverage = np.where(full, "full", np.where(unseen > 0, "beyond", "within"))
    columns = {
        "layer": layer,
        "pair": pair,
        "theta": theta,
        "wavelength": TWO_PI / theta,
        "train_context": np.full(theta.shape, train),
        "length": np.full(theta.shape, length),
        "train_max_angle": train_max,
        "max_angle": max_angle,
        "train_cycles": theta * train / TWO_PI,
        "cycles": theta * length / TWO_PI,
        "train_partial_cycle": theta * train < TWO_PI,
        "partial_cycle": theta * length < TWO_PI,
        "train_full_circle": full,
        "unseen_angle": unseen,
        "new_angles": unseen > 0,
        "coverage": coverage,
    }
    return pd.DataFrame({name: np.asarray(v).reshape(-1) for name, v in columns.items()})


def cycle_boundaries(
    model_or_spec,
    lengths: Iterable[int] | None = None,
    layers: int | Iterable[int] | None = None,
) -> pd.DataFrame:
    """The partial-cycle boundary as a function of the window length L: one row per (layer,
    length).

    Args:
        lengths: window lengths (default powers of two from 2 up to 4 × n_ctx, and n_ctx).
        layers: layer indices (default all).

    Columns: layer, length, first_partial_pair (first pair with θL < 2π; n_pairs if none),
    first_half_pair (first with θL < π), n_partial_pairs (pairs with θL < 2π),
    critical_dimension (2 × first_partial_pair: rotary dims that turn a full cycle within L),
    beyond_context (L > n_ctx).
    """
    spec = model_or_spec if isinstance(model_or_spec, RotarySpec) else spec_for(model_or_spec)
    if lengths is None:
        top = max(2, math.ceil(math.log2(4 * spec.n_ctx)))
        lengths = sorted({2**k for k in range(1, top + 1)} | {spec.n_ctx})
    lengths = [_check_length(n, "lengths") for n in lengths]
    if not lengths:
        raise RopeInterpError("lengths is empty: name at least one window length.")
    rows = []
    for layer in spec.resolve_layers(layers):
        for n in lengths:
            first = spec.first_partial_pair(n, layer)
            rows.append(
                {
                    "layer": layer,
                    "length": n,
                    "first_partial_pair": first,
                    "first_half_pair": spec.first_partial_pair(n, layer, turn=math.pi),
                    "n_partial_pairs": int(spec.partial_cycle_mask(n)[layer].sum()),
                    "critical_dimension": spec.critical_dimension(n, layer),
                    "beyond_context": n > spec.n_ctx,
                }
            )
    return pd.DataFrame(rows)


def _check_length(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise RopeInterpError(f"{what} must be a positive number of tokens, got {value!r}.")
    return int(value)
