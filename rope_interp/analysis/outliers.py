"""Rotary outliers and rotary offset features (claim set A, Jonasson 2025).

Per (layer, query head, pair) from `PairStats`: max and mean |z| of q and of k (the query head's
KV head under GQA), concentrations, mean angles, the offset angle α = ∠μ_q − ∠μ_k, and the
interval [α, α + θ_i(L−1)] that the pair's score term cos(α + Δθ_i) sweeps over the causal
offsets Δ = 0..L−1 (TransformerLens rotates z by e^{+ipθ}, so the argument *increases* with Δ).

Outlier rule (documented, thresholds are parameters): within each (kind, layer, head) compute
the robust z-score of log(max |z_i|) over the head's pairs, z = (x − median)/(1.4826·MAD), and
the ratio max |z_i| / median over pairs; a pair is an outlier in q (in k) when z > threshold
(default 3.5) *and* ratio ≥ min_ratio (default 2: the z-score alone over-flags heads whose pairs
are nearly equal, where the MAD is tiny); `flagged` needs both q and k (default,
`require="both"`) or either. Logs because norms are positive and right-skewed.

Reference rule (`rule="reference"`, Jonasson's): one global threshold per kind — a pair is an
outlier in q (in k) when its max |z_i| > `reference_factor` (default 4) × the median of max |z_i|
over all layers, heads and pairs of that kind. `threshold` and `min_ratio` are then unused.

Bounds (derived in docs/theory.md), with L the context length:
- partial cycle: θ_i·L < 2π;
- frequency bound: θ_i·(L−1) < π — necessary for the score term to keep one sign for every Δ;
- angle bound: α ∈ [−π/2, π/2 − θ_i(L−1)] (term ≥ 0 for all Δ) or α ∈ [π/2, 3π/2 − θ_i(L−1)]
  (≤ 0 for all Δ), mod 2π. So a sign-constant feature needs |α| ≤ π/2 (attracting) or
  |α| ≥ π/2 (repelling), with the margin θ_i(L−1) taken on the side the rotation moves towards.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_interp.analysis._common import robust_z, wrap
from rope_interp.core.stats import PairStats
from rope_interp.errors import RopeInterpError


def frequency_bound(context: int) -> float:
    """Largest θ for which a pair's score term can keep one sign over Δ = 0..context−1:
    π / (context − 1)."""
    if context < 2:
        raise RopeInterpError(f"context must be ≥ 2 tokens, got {context}.")
    return math.pi / (context - 1)


def angle_interval(theta: float, context: int, sign: str = "negative") -> tuple[float, float]:
    """Offset angles α (radians, not wrapped) for which |q||k|cos(α + Δθ) keeps `sign`
    ('positive': ≥ 0, 'negative': ≤ 0) for every Δ in 0..context−1; empty (lo > hi) when θ is
    above the frequency bound."""
    sweep = theta * (context - 1)
    if sign == "positive":
        return -math.pi / 2, math.pi / 2 - sweep
    if sign == "negative":
        return math.pi / 2, 3 * math.pi / 2 - sweep
    raise RopeInterpError(f"sign must be 'positive' or 'negative', got {sign!r}.")


def sweep_sign(
    alpha: Float[Tensor, "*n"], theta: Float[Tensor, "*n"], context: int
) -> Float[Tensor, "*n"]:
    """+1 where cos(α + Δθ) ≥ 0 for all Δ ∈ [0, context−1], −1 where ≤ 0 for all, 0 (mixed)
    otherwise."""
    sweep = theta * (context - 1)
    # α ∈ [−π/2, π/2 − sweep] (mod 2π) ⇔ (α + π/2) mod 2π ∈ [0, π − sweep]; likewise for ≤ 0.
    pos = torch.remainder(alpha + math.pi / 2, 2 * math.pi) <= math.pi - sweep
    neg = torch.remainder(alpha - math.pi / 2, 2 * math.pi) <= math.pi - sweep
    return pos.to(alpha.dtype) - neg.to(alpha.dtype)


def offset_features(
    stats: PairStats,
    context: int | None = None,
    threshold: float = 3.5,
    require: str = "both",
    min_ratio: float = 2.0,
    rule: str = "project",
    reference_factor: float = 4.0,
) -> pd.DataFrame:
    """One row per (layer, head, pair), head a query head (kv_head is the key head it reads).

    Args:
        context: L for the cycle and bound tests (default: the sequence length of the corpus,
            tokens_seen / sequences_seen).
        threshold: robust z-score above which a pair is an outlier.
        require: "both" (q and k outliers) or "either".
        min_ratio: an outlier's max |z| must also be ≥ min_ratio × the head's median over pairs.
        rule: "project" (robust z within each head, above) or "reference" (max |z| >
            reference_factor × the global median over layers, heads and pairs).
        reference_factor: the factor of the reference rule.

    Columns: kv_head, theta, wavelength, cycles (Lθ/2π), q_max, q_mean, k_max, k_mean, q_conc,
    k_conc (mean resultant lengths), q_angle, k_angle (∠μ), alpha (∠μ_q − ∠μ_k in (−π, π]),
    sweep_start, sweep_end (α, α + θ(L−1)), mean_term (|μ_q||μ_k|cos α, unscaled), q_z, k_z
    (robust z of log max), q_ratio, k_ratio (max / head median), q_outlier, k_outlier, flagged,
    partial_cycle (θL < 2π), frequency_bound (θ(L−1) < π), sweep_sign (+1 / −1 / 0 mixed),
    angle_bound (sweep_sign ≠ 0).
    """
    if require not in ("both", "either"):
        raise RopeInterpError(f"require must be 'both' or 'either', got {require!r}.")
    if rule not in ("project", "reference"):
        raise RopeInterpError(f"rule must be 'project' or 'reference', got {rule!r}.")
    if reference_factor <= 0:
        raise RopeInterpError(f"reference_factor must be > 0, got {reference_factor}.")
    if context is None:
        if stats.sequences_seen == 0:
            raise RopeInterpError("No sequences were accumulated; give context explicitly.")
        context = stats.tokens_seen // stats.sequences_seen
    spec = stats.spec
    kv = torch.arange(spec.n_heads, device="cpu") // spec.group_size
    parts = {}
    for kind in ("q", "k"):
        acc = stats.acc[kind]
        count = acc["count"].clamp(min=1).cpu()
        mean_norm = acc["sum_norm"].cpu() / count
        mu = stats.mean_vectors(kind).cpu()
        max_norm = acc["max_norm"].cpu()
        z = robust_z(max_norm.clamp(min=1e-30).log(), dim=-1)
        ratio = max_norm / max_norm.median(-1, keepdim=True).values.clamp(min=1e-30)
        if rule == "project":
            outlier = (z > threshold) & (ratio >= min_ratio)
        else:
            outlier = max_norm > reference_factor * max_norm.flatten().median()
        if kind == "k":
            mean_norm, mu, max_norm = mean_norm[:, kv], mu[:, kv], max_norm[:, kv]
            z, ratio, outlier = z[:, kv], ratio[:, kv], outlier[:, kv]
        parts[kind] = dict(
            max=max_norm,
            mean=mean_norm,
            conc=mu.abs() / mean_norm.clamp(min=1e-30),
            angle=mu.angle(),
            mu=mu,
            z=z,
            ratio=ratio,
            outlier=outlier,
        )
    n_layers, n_heads, n_pairs = parts["q"]["max"].shape
    theta = spec.thetas[stats.layers].cpu()[:, None, :].expand(n_layers, n_heads, n_pairs)
    alpha = wrap(parts["q"]["angle"] - parts["k"]["angle"])
    q_out, k_out = parts["q"]["outlier"], parts["k"]["outlier"]
    flagged = (q_out & k_out) if require == "both" else (q_out | k_out)
    sign = sweep_sign(alpha, theta, context)
    index = torch.cartesian_prod(
        torch.tensor(stats.layers, device="cpu"),
        torch.arange(n_heads, device="cpu"),
        torch.arange(n_pairs, device="cpu"),
    )
    columns = {
        "layer": index[:, 0],
        "head": index[:, 1],
        "kv_head": kv[index[:, 1]],
        "pair": index[:, 2],
        "theta": theta,
        "wavelength": 2 * math.pi / theta,
        "cycles": context * theta / (2 * math.pi),
        "q_max": parts["q"]["max"],
        "q_mean": parts["q"]["mean"],
        "k_max": parts["k"]["max"],
        "k_mean": parts["k"]["mean"],
        "q_conc": parts["q"]["conc"],
        "k_conc": parts["k"]["conc"],
        "q_angle": parts["q"]["angle"],
        "k_angle": parts["k"]["angle"],
        "alpha": alpha,
        "sweep_start": alpha,
        "sweep_end": alpha + theta * (context - 1),
        "mean_term": parts["q"]["mu"].abs() * parts["k"]["mu"].abs() * alpha.cos(),
        "q_z": parts["q"]["z"],
        "k_z": parts["k"]["z"],
        "q_ratio": parts["q"]["ratio"],
        "k_ratio": parts["k"]["ratio"],
        "q_outlier": q_out,
        "k_outlier": k_out,
        "flagged": flagged,
        "partial_cycle": context * theta < 2 * math.pi,
        "frequency_bound": theta * (context - 1) < math.pi,
        "sweep_sign": sign.round().long(),
        "angle_bound": sign != 0,
    }
    frame = pd.DataFrame({k: v.reshape(-1).numpy() for k, v in columns.items()})
    frame.attrs["context"] = context
    frame.attrs["threshold"] = threshold
    frame.attrs["min_ratio"] = min_ratio
    frame.attrs["rule"] = rule
    frame.attrs["reference_factor"] = reference_factor
    return frame


def bound_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Fractions of flagged pairs (and, as a base rate, of all pairs) that satisfy the
    partial-cycle condition, the frequency bound and the angle bound; plus the mean
    concentration of q and k. One row per scope ('flagged', 'all')."""
    rows = []
    for scope, part in (("flagged", table[table["flagged"]]), ("all", table)):
        n = len(part)
        rows.append(
            {
                "scope": scope,
                "n_pairs": n,
                "partial_cycle": part["partial_cycle"].mean() if n else math.nan,
                "frequency_bound": part["frequency_bound"].mean() if n else math.nan,
                "angle_bound": part["angle_bound"].mean() if n else math.nan,
                "negative_sign": (part["sweep_sign"] < 0).mean() if n else math.nan,
                "q_conc": part["q_conc"].mean() if n else math.nan,
                "k_conc": part["k_conc"].mean() if n else math.nan,
            }
        )
    return pd.DataFrame(rows)
