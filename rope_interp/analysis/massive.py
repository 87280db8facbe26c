"""Massive values (Jin et al., ICML 2025): per head, the q/k dimensions whose norm over the
sequence is largest, mapped to their rotary pairs and frequencies.

Norm of dimension d of a head in one sequence: ‖x[:, d]‖₂ over positions (pre-rotation `hook_q`
/ `hook_k`, and `hook_v` as the control that should *not* concentrate); averaged over
sequences. Jin et al. find the largest ones in low-frequency pairs of q and k only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from torch import Tensor

from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel


def dim_to_pair(spec) -> tuple[Tensor, Tensor]:
    """`[d_head]` pair index of each dimension (−1 for pass-through dims) and which member of
    the pair it is (0: real part a, 1: imaginary part b; −1 for pass-through)."""
    pair = torch.full((spec.d_head,), -1, dtype=torch.long, device="cpu")
    member = torch.full((spec.d_head,), -1, dtype=torch.long, device="cpu")
    dims = spec.dims
    for col in (0, 1):
        pair[dims[:, col]] = torch.arange(spec.n_pairs, device="cpu")
        member[dims[:, col]] = col
    return pair, member


def massive_values(
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    top_k: int = 4,
    kinds: Sequence[str] = ("q", "k", "v"),
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> pd.DataFrame:
    """The `top_k` dimensions with the largest sequence norm per (kind, layer, head).

    One row per (kind, layer, head, rank): dim, pair (−1: pass-through or v, which does not
    rotate), member, theta and wavelength of the pair (NaN for none), pair_position
    (pair / (n_pairs − 1): 0 = highest, 1 = lowest frequency), norm (mean over sequences of
    ‖x[:, d]‖₂), ratio (norm / the head's median dim norm). Heads of k and v are KV heads.
    `spec`: the model's spec, bound once by the caller (default: read from `model`).
    """
    for kind in kinds:
        if kind not in ("q", "k", "v"):
            raise RopeInterpError(f"kinds must be among 'q', 'k', 'v'; got {kind!r}.")
    spec = spec_for(model, spec)
    chosen = spec.resolve_layers(layers)
    if not 1 <= top_k <= spec.d_head:
        raise RopeInterpError(f"top_k must lie in 1..{spec.d_head}, got {top_k}.")
    acc: dict[tuple[str, int], Tensor] = {}
    seqs = {"n": 0}
    backend = spec.backend

    hooks = []
    for layer in chosen:
        for kind in kinds:
            # q/k: what enters the rotation (after a QK-norm where the model has one).
            point = backend.read_point(kind, layer) if kind != "v" else None

            def fn(tensor, hook, kind=kind, layer=layer, point=point):
                x = tensor.detach() if point is None else point.read(tensor.detach())
                norm = x.double().square().sum(1).sqrt()  # [b, head, d_head]
                acc[(kind, layer)] = acc.get((kind, layer), 0) + norm.sum(0).cpu()

            hooks.append((point.hook if point else f"blocks.{layer}.attn.hook_v", fn))

    def count_sequences(tokens: Tensor, _) -> None:
        seqs["n"] += tokens.shape[0]

    run_batches(model, batches, hooks, "massive values", progress, after_batch=count_sequences)
    pair_of, member_of = dim_to_pair(spec)
    rows = []
    for (kind, layer), total in acc.items():
        norm = total / seqs["n"]
        median = norm.median(-1).values
        values, dims = norm.topk(top_k, dim=-1)
        for h in range(norm.shape[0]):
            for rank in range(top_k):
                d = int(dims[h, rank])
                pair = int(pair_of[d]) if kind != "v" else -1
                theta = float(spec.thetas[layer, pair]) if pair >= 0 else float("nan")
                rows.append(
                    {
                        "kind": kind,
                        "layer": layer,
                        "head": h,
                        "rank": rank,
                        "dim": d,
                        "pair": pair,
                        "member": int(member_of[d]) if pair >= 0 else -1,
                        "theta": theta,
                        "wavelength": 2 * torch.pi / theta if pair >= 0 else float("nan"),
                        "pair_position": pair / max(spec.n_pairs - 1, 1)
                        if pair >= 0
                        else float("nan"),
                        "norm": float(values[h, rank]),
                        "ratio": float(values[h, rank] / median[h].clamp(min=1e-300)),
                    }
                )
    return pd.DataFrame(rows).sort_values(["kind", "layer", "head", "rank"], ignore_index=True)
