"""Symmetric phase sweep with the mechanism measured (claim set C, Ruscio & Silvestri): rotate
chosen pairs of q by a constant angle φ ∈ [−π, π] (`ablation.Intervention(mode="phase")`) and
record, per φ, the loss and where the attention of chosen heads goes: to the token itself
(Δ = 0), the previous token (Δ = 1) and the first token (key 0).

On q, φ adds to every offset angle α_i of the selected pairs, so the score term
|z_q||z_k|cos(α_i + Δθ_i + φ) peaks at the offset Δ where Δθ_i = −(α_i + φ): a previous-token
head built by the highest pairs (θ_0 = 1 rad/token) moves its peak by −φ/θ_0 tokens, so φ > 0
pulls it towards Δ = 0 (self) and φ < 0 pushes it further back. The sweep measures that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel
from rope_interp.interventions.ablation import Intervention
from rope_interp.interventions.selection import PairSelection


def symmetric_phis(n: int = 9) -> list[float]:
    """`n` (odd, ≥ 3) equally spaced angles from −π to π, 0 included."""
    if n < 3 or n % 2 == 0:
        raise RopeInterpError(f"n must be an odd number ≥ 3 (so that 0 is included), got {n}.")
    return [-math.pi + 2 * math.pi * i / (n - 1) for i in range(n)]


def phase_sweep_attention(
    model: HostModel,
    batches: Iterable[Tensor],
    selection: PairSelection,
    heads: Sequence[tuple[int, int]],
    phis: Sequence[float] | None = None,
    side: str = "q",
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> pd.DataFrame:
    """Loss and attention destinations of `heads` ((layer, query head) pairs) under a constant
    phase φ on the `selection`'s pairs, for every φ in `phis` (default `symmetric_phis(9)`;
    φ = 0 is the clean model: no hook).

    One row per (phi, layer, head): loss (mean next-token loss, nats/token, over every token
    of the corpus), self, previous, first (mean attention weight on key m, m−1 and 0 over query
    positions m ≥ 2, so that the three keys are distinct), and their clean values (self_base,
    previous_base, first_base). `spec`: the model's spec, bound once by the caller (default:
    read from `model`).
    """
    spec = spec_for(model, spec)
    phis = list(symmetric_phis(9) if phis is None else phis)
    if not phis:
        raise RopeInterpError("Give at least one phase angle.")
    heads = [(int(layer), int(head)) for layer, head in heads]
    if not heads:
        raise RopeInterpError("Give at least one (layer, head) to follow.")
    for layer, head in heads:
        if not (0 <= layer < spec.n_layers and 0 <= head < spec.n_heads):
            raise RopeInterpError(
                f"head (layer {layer}, head {head}) is outside this model's "
                f"{spec.n_layers} layers × {spec.n_heads} heads."
            )
    # Every φ is one more pass over the corpus, so the batches are held in a list.
    batches = [batches] if isinstance(batches, Tensor) else list(batches)
    if batches and min(int(b.shape[-1]) for b in batches) < 3:
        raise RopeInterpError("Sequences need at least 3 tokens (self, previous, first differ).")
    layers = sorted({layer for layer, _ in heads})

    def measure(phi: float | None) -> dict[tuple[int, int], dict[str, float]]:
        sums = {h: torch.zeros(3, dtype=torch.float64) for h in heads}
        counts = {"rows": 0, "tokens": 0, "loss": 0.0}

        def hook_for(layer):
            def fn(pattern, hook):
                p = pattern.detach().double()  # [batch, head, q, k]
                m = torch.arange(2, p.shape[-2], device=p.device)
                for lay, head in heads:
                    if lay != layer:
                        continue
                    rows = p[:, head, m]  # [batch, M, k]
                    self_ = rows.gather(-1, m[None, :, None].expand(len(rows), -1, 1))
                    prev = rows.gather(-1, (m - 1)[None, :, None].expand(len(rows), -1, 1))
                    sums[(lay, head)] += torch.stack(
                        [self_.sum(), prev.sum(), rows[..., 0].sum()]
                    ).cpu()
                if layer == layers[0]:
                    counts["rows"] += p.shape[0] * len(m)

            return fn

        hooks = [(f"blocks.{layer}.attn.hook_pattern", hook_for(layer)) for layer in layers]

        def forward(tokens: Tensor) -> Tensor:
            if phi is None:
                return model(tokens, return_type="loss", loss_per_token=True)
            with Intervention(model, selection, mode="phase", side=side, phi=phi, spec=spec):
                return model(tokens, return_type="loss", loss_per_token=True)

        def add_loss(tokens: Tensor, loss: Tensor) -> None:
            counts["loss"] += float(loss.double().sum())
            counts["tokens"] += loss.numel()

        run_batches(model, batches, hooks, progress=False, forward=forward, after_batch=add_loss)
        out = {}
        for h in heads:
            s = sums[h] / counts["rows"]
            out[h] = {
                "self": float(s[0]),
                "previous": float(s[1]),
                "first": float(s[2]),
                "loss": counts["loss"] / counts["tokens"],
            }
        return out

    clean = measure(None)
    rows = []
    for phi in tqdm(phis, desc="phase sweep", disable=not progress):
        result = clean if phi == 0 else measure(float(phi))
        for layer, head in heads:
            r, c = result[(layer, head)], clean[(layer, head)]
            rows.append(
                {
                    "phi": float(phi),
                    "layer": layer,
                    "head": head,
                    "loss": r["loss"],
                    "delta_loss": r["loss"] - c["loss"],
                    "self": r["self"],
                    "previous": r["previous"],
                    "first": r["first"],
                    "self_base": c["self"],
                    "previous_base": c["previous"],
                    "first_base": c["first"],
                }
            )
    return pd.DataFrame(rows)


__all__ = ["phase_sweep_attention", "symmetric_phis"]
