"""What the experiment runner measures on a batch: pure tensor maths, no model, no hooks.

- `sequence_losses`: mean next-token loss of each sequence (nats/token).
- `row_metrics`: per head, sums over the batch and query rows q ≥ 1 of the attention on the
  query's own position (`diag`), the previous one (`prev`), position 0 (`first`), and the row's
  entropy and largest weight.
- `attention_kl`: per head, the summed KL(clean row ‖ ablated row).

The row q = 0 is left out everywhere: it can only attend to itself.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

METRICS = ("kl", "diag", "prev", "first", "entropy", "max_weight")


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


def zero_sums(n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    """Float64 running sums of every metric, [layer, head], all zero."""
    return {m: np.zeros((n_layers, n_heads), dtype=np.float64) for m in METRICS}


def add_to_sums(sums: dict[str, np.ndarray], layer: int, values: dict[str, Tensor]) -> None:
    """Add one layer's per-head metric values (any device) to the running sums."""
    for name, value in values.items():
        sums[name][layer] += value.double().cpu().numpy()
