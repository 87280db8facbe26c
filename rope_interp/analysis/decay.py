"""Does attention decay with distance? (Barbero et al., claim set B.)

RoPE is often said to make scores decay with distance. Barbero et al. show it has no inherent
decay: for independent Gaussian q and k the expected score is 0 at every distance, and a decay
appears only for special inputs such as all-ones vectors (then the score at distance Δ is
Σ_i 2cos(Δθ_i) + n_pass, RoFormer's curve). Two tables:

- `reference_decay`: the all-ones curve (exact) and a Monte Carlo estimate for independent
  Gaussian q, k with its standard error, from the model's own frequencies;
- `score_decay`: what a trained model does: the mean attention score at each distance per head
  (pre-softmax, `hook_attn_scores` scale), measured on a corpus, and per head the Spearman
  correlation between distance and mean score (negative: the head's scores fall with distance).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rope_interp.analysis._common import rotated_pass
from rope_interp.analysis.statistics import spearman
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel


def reference_decay(
    spec: RotarySpec,
    layer: int = 0,
    max_distance: int | None = None,
    n_samples: int = 4096,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per distance Δ = 0..max_distance: `ones` (q = k = all-ones, exact, unscaled
    dot product), `gaussian_mean` and `gaussian_se` (independent standard normal q and k,
    Monte Carlo over `n_samples` pairs of vectors, unscaled)."""
    spec.check_layer(layer)
    max_distance = spec.n_ctx - 1 if max_distance is None else max_distance
    if not 0 <= max_distance < spec.n_ctx:
        raise RopeInterpError(
            f"max_distance must lie in [0, {spec.n_ctx - 1}], got {max_distance}."
        )
    distance = torch.arange(max_distance + 1, device="cpu")
    phasor = spec.phasors(layer, distance, torch.complex128)  # [Δ, pair]
    ones = 2 * phasor.real.sum(-1) + spec.n_pass
    generator = torch.Generator().manual_seed(seed)
    shape = (n_samples, spec.n_pairs)
    zq = torch.complex(
        torch.randn(shape, generator=generator, dtype=torch.float64),
        torch.randn(shape, generator=generator, dtype=torch.float64),
    )
    zk = torch.complex(
        torch.randn(shape, generator=generator, dtype=torch.float64),
        torch.randn(shape, generator=generator, dtype=torch.float64),
    )
    pass_dot = (
        torch.randn(n_samples, spec.n_pass, generator=generator, dtype=torch.float64)
        * torch.randn(n_samples, spec.n_pass, generator=generator, dtype=torch.float64)
    ).sum(-1)
    # q at position Δ against k at position 0: Re(zq e^{iΔθ} · conj(zk)), summed over pairs.
    scores = (zq[:, None] * phasor[None] * zk.conj()[:, None]).real.sum(-1) + pass_dot[:, None]
    return pd.DataFrame(
        {
            "distance": distance.numpy(),
            "ones": ones.numpy(),
            "gaussian_mean": scores.mean(0).numpy(),
            "gaussian_se": (scores.std(0) / n_samples**0.5).numpy(),
        }
    )


def score_decay(
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean pre-softmax attention score by distance in a trained model.

    Returns `(curves, heads)`: `curves` has one row per (layer, head, distance) with
    `mean_score` (scores of `hook_attn_scores`, averaged over every query m ≥ Δ and sequence);
    `heads` one row per (layer, head) with `near` (mean over Δ = 1..8), `far` (mean over the
    last quarter of distances) and `spearman` (distance vs mean score, Δ ≥ 1). `spec`: the
    model's spec, bound once by the caller (default: read from `model`).
    """
    spec = spec_for(model, spec)
    sums: dict[int, Tensor] = {}
    counts: dict[int, Tensor] = {}

    def on_layer(layer, pattern, zq, zk, q_pass, k_pass):
        scores = torch.einsum("bqhp,bkhp->bhqk", zq, zk.conj()).real
        scores += torch.einsum("bqhd,bkhd->bhqk", q_pass, k_pass)
        n = scores.shape[-1]
        per_distance = torch.stack(
            [torch.diagonal(scores, offset=-d, dim1=-2, dim2=-1).sum((0, -1)) for d in range(n)],
            dim=-1,
        )  # [head, distance]
        batch = scores.shape[0]
        count = torch.tensor(
            [batch * (n - d) for d in range(n)], dtype=torch.float64, device=scores.device
        )
        if layer in sums and sums[layer].shape[-1] != n:
            raise RopeInterpError("All batches must have the same sequence length.")
        sums[layer] = sums.get(layer, 0) + per_distance
        counts[layer] = counts.get(layer, 0) + count

    chosen, _ = rotated_pass(model, spec, batches, layers, on_layer, "score decay", progress)
    curve_rows, head_rows = [], []
    for layer in chosen:
        mean = (sums[layer] / counts[layer]).cpu().numpy()  # [head, distance]
        n = mean.shape[1]
        distance = np.arange(n)
        for head in range(spec.n_heads):
            curve_rows.append(
                pd.DataFrame(
                    {"layer": layer, "head": head, "distance": distance, "mean_score": mean[head]}
                )
            )
            tail = mean[head, 1:]
            rho = spearman(distance[1:], tail) if n > 2 else float("nan")
            head_rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "near": float(mean[head, 1 : min(9, n)].mean()) if n > 1 else float("nan"),
                    "far": float(mean[head, max(1, 3 * n // 4) :].mean()),
                    "spearman": float(rho),
                }
            )
    return pd.concat(curve_rows, ignore_index=True), pd.DataFrame(head_rows)


__all__ = ["reference_decay", "score_decay"]
