"""Frequency usage (claim set B, Barbero et al.): how much of each head's q/k norm sits in each
rotary pair, as layer × pair and head × pair maps, and each head's share in the highest /
lowest frequency bands.

Built from `PairStats` (one streaming pass, `collect_pair_stats`). Usage of pair i is the mean
2-norm E‖z_i‖ over tokens; `share` divides each (kind, layer, head) row by its sum over pairs so
that layers and heads with different overall scales compare. Kind "qk" is the product
E‖z^q_i‖·E‖z^k_i‖ for each query head and its KV head: the scale of pair i's score term.
"""

from __future__ import annotations

import pandas as pd
import torch

from rope_interp.analysis._common import bands
from rope_interp.core.stats import PairStats

_KINDS = ("q", "k", "qk")


def _mean_norms(stats: PairStats) -> dict[str, torch.Tensor]:
    """kind → `[layer, head, pair]` mean pair norms (k per KV head; qk per query head)."""
    out = {}
    for kind in ("q", "k"):
        acc = stats.acc[kind]
        out[kind] = (acc["sum_norm"] / acc["count"].clamp(min=1)).cpu()
    kv = torch.arange(stats.spec.n_heads, device="cpu") // stats.spec.group_size
    out["qk"] = out["q"] * out["k"][:, kv]
    return out


def frequency_usage(stats: PairStats) -> pd.DataFrame:
    """Head × pair usage map. One row per (kind, layer, head, pair), kind in q | k | qk (head is
    a KV head for k). Columns: mean_norm (E‖z_i‖, or the q·k product for qk), share (row
    normalised: sums to 1 over pairs), theta, wavelength."""
    frames = []
    thetas = stats.spec.thetas[stats.layers].cpu()
    for kind, norms in _mean_norms(stats).items():
        share = norms / norms.sum(-1, keepdim=True).clamp(min=1e-300)
        n_layers, n_heads, n_pairs = norms.shape
        index = torch.cartesian_prod(
            torch.tensor(stats.layers, device="cpu"),
            torch.arange(n_heads, device="cpu"),
            torch.arange(n_pairs, device="cpu"),
        )
        theta = thetas[:, None, :].expand(n_layers, n_heads, n_pairs).reshape(-1)
        frames.append(
            pd.DataFrame(
                {
                    "kind": kind,
                    "layer": index[:, 0].numpy(),
                    "head": index[:, 1].numpy(),
                    "pair": index[:, 2].numpy(),
                    "mean_norm": norms.reshape(-1).double().numpy(),
                    "share": share.reshape(-1).double().numpy(),
                    "theta": theta.numpy(),
                    "wavelength": (2 * torch.pi / theta).numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def layer_usage(stats: PairStats) -> pd.DataFrame:
    """Layer × pair usage map. One row per (kind, layer, pair): mean_norm averaged over the
    layer's heads, and share (normalised per layer: sums to 1 over pairs)."""
    table = frequency_usage(stats)
    out = table.groupby(["kind", "layer", "pair"], as_index=False).agg(
        mean_norm=("mean_norm", "mean"),
        theta=("theta", "first"),
        wavelength=("wavelength", "first"),
    )
    out["share"] = out["mean_norm"] / out.groupby(["kind", "layer"])["mean_norm"].transform("sum")
    return out


def band_shares(stats: PairStats, fraction: float = 0.25) -> pd.DataFrame:
    """Per (kind, layer, head): share of the head's usage in the highest-frequency `fraction` of
    pairs (`high_share`) and in the lowest (`low_share`), the pair with the largest usage
    (`top_pair`) and its share. Under uniform usage both shares equal the band's pair fraction
    (`band_fraction`)."""
    table = frequency_usage(stats)
    high, low = bands(stats.spec.n_pairs, fraction)
    rows = []
    for (kind, layer, head), group in table.groupby(["kind", "layer", "head"], sort=False):
        share = group.set_index("pair")["share"]
        top = int(share.idxmax())
        rows.append(
            {
                "kind": kind,
                "layer": int(layer),
                "head": int(head),
                "high_share": float(share.loc[high].sum()),
                "low_share": float(share.loc[low].sum()),
                "band_fraction": len(high) / stats.spec.n_pairs,
                "top_pair": top,
                "top_share": float(share.loc[top]),
            }
        )
    return pd.DataFrame(rows)
