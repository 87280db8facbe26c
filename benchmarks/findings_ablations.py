"""Findings for "## Ablations" of docs/findings.md, on the built-in SmolLM2-135M and the embedded
corpus (pydoc_data.topics): band ablations (k highest vs k lowest vs random pairs), a p-RoPE
sweep (and reversed), a phase sweep, and the ablation of flagged outlier / low-frequency
high-norm pairs. Prints markdown tables; results are resumable under --out.

    python benchmarks/findings_ablations.py --windows 8 --seq-len 256 --out /tmp/findings-ablations
"""

from __future__ import annotations

import argparse
import math
import time

import pandas as pd
import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.interventions.ablation import Intervention, p_rope, position_shift
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment
from rope_interp.interventions.selection import (
    PairSelection,
    select_band,
    select_frame,
    select_random,
)
from rope_interp.loading.data import load_corpus
from rope_interp.loading.models import load_model


def band_conditions(model, spec) -> list[Condition]:
    out = []
    for k in (2, 4, 8):
        high = select_band(spec, "high", k=k)
        for band, sel in (
            ("high", high),
            ("low", select_band(spec, "low", k=k)),
            ("random", select_random(spec, high, seed=k)),
        ):
            out.append(
                Condition(
                    f"zero {band} {k}",
                    Intervention(model, sel, "zero", "both", spec=spec),
                    params={"family": "band", "band": band, "k": k},
                )
            )
    return out


def p_rope_conditions(model, spec) -> list[Condition]:
    out = [Condition("p-RoPE p=1", p_rope(model, 1.0, spec=spec), params={"family": "prope"})]
    out[0].params.update(p=1.0, reverse=False)
    for reverse in (False, True):
        for p in (0.875, 0.75, 0.5, 0.25, 0.0):
            if reverse and p == 0.0:
                continue  # the same as p = 0 (every pair NoPE)
            name = f"{'reversed ' if reverse else ''}p-RoPE p={p:g}"
            out.append(
                Condition(
                    name,
                    p_rope(model, p, reverse=reverse, spec=spec),
                    params={"family": "prope", "p": p, "reverse": reverse},
                )
            )
    return out


def phase_conditions(model, spec) -> list[Condition]:
    out = []
    bands = {
        "high 8": select_band(spec, "high", k=8),
        "low 8": select_band(spec, "low", k=8),
    }
    for band, sel in bands.items():
        for phi in (math.pi / 4, math.pi / 2, math.pi):
            out.append(
                Condition(
                    f"phase q {band} φ={phi:.3f}",
                    Intervention(model, sel, "phase", "q", phi=phi, spec=spec),
                    params={"family": "phase", "band": band, "phi": phi},
                )
            )
    out.append(
        Condition(
            "position shift +100 (q and k)",
            position_shift(model, 100, spec=spec),
            params={"family": "control"},
        )
    )
    return out


def outlier_conditions(model, spec, stats, context) -> tuple[list[Condition], str]:
    """Flagged outlier pairs (if the outliers analysis exists and flags any) and the top-2
    highest-norm k pairs of the lowest quarter per (layer, KV head); random controls of the
    same size. Whole KV groups are selected so that q and k can both be ablated."""
    out, notes = [], []
    frames: dict[str, pd.DataFrame] = {}
    try:
        from rope_interp.analysis.outliers import offset_features

        table = offset_features(stats, context=context)
        flagged = table[table["flagged"]]
        notes.append(
            f"offset_features flagged {len(flagged)} (layer, query head, pair) rows "
            f"(pairs {sorted(flagged['pair'].unique().tolist())})"
        )
        if len(flagged):
            frames["flagged outliers"] = pd.DataFrame(
                {
                    "kind": "k",
                    "layer": flagged["layer"],
                    "head": flagged["kv_head"],
                    "pair": flagged["pair"],
                }
            ).drop_duplicates()
    except ImportError:
        notes.append("rope_interp.analysis.outliers not available")
    k_stats = stats.to_frame()
    k_stats = k_stats[(k_stats["kind"] == "k") & (k_stats["pair"] >= spec.n_pairs * 3 // 4)]
    top = k_stats.sort_values("mean_norm", ascending=False).groupby(["layer", "head"]).head(2)
    frames["low-freq high-norm k (top 2 of lowest 25 %)"] = top.assign(kind="k")[
        ["kind", "layer", "head", "pair"]
    ]
    for label, frame in frames.items():
        sel = select_frame(spec, frame, label)
        control = select_random(spec, sel, seed=7)
        for name, s in ((label, sel), (f"random like {label}", control)):
            out.append(
                Condition(
                    f"zero {name}",
                    Intervention(model, PairSelection(s.mask, name), "zero", "both", spec=spec),
                    params={"family": "outlier"},
                )
            )
    return out, "; ".join(notes)


def positional_heads(heads: pd.DataFrame, n: int = 6) -> pd.DataFrame:
    clean = heads[heads["condition"] == heads["condition"].iloc[0]]
    score = clean[["prev_base", "diag_base"]].max(axis=1)
    return clean.assign(score=score).nlargest(n, "score")[
        ["layer", "head", "prev_base", "diag_base", "first_base"]
    ]


def per_condition(summary: pd.DataFrame, heads: pd.DataFrame, top: pd.DataFrame) -> pd.DataFrame:
    key = set(zip(top["layer"], top["head"], strict=True))
    in_top = [(la, h) in key for la, h in zip(heads["layer"], heads["head"], strict=True)]
    pos = heads[in_top]
    prev_heads = top[top["prev_base"] >= top["diag_base"]]
    prev_key = set(zip(prev_heads["layer"], prev_heads["head"], strict=True))
    is_prev = [(la, h) in prev_key for la, h in zip(heads["layer"], heads["head"], strict=True)]
    diag_key = key - prev_key
    is_diag = [(la, h) in diag_key for la, h in zip(heads["layer"], heads["head"], strict=True)]
    agg = heads.groupby("condition", sort=False).agg(
        first=("first", "mean"),
        first_base=("first_base", "mean"),
        entropy=("entropy", "mean"),
        entropy_base=("entropy_base", "mean"),
        max_weight=("max_weight", "mean"),
        max_weight_base=("max_weight_base", "mean"),
        kl=("kl", "mean"),
    )
    agg["prev_pos_heads"] = heads[is_prev].groupby("condition", sort=False)["prev"].mean()
    agg["prev_pos_heads_base"] = heads[is_prev].groupby("condition", sort=False)["prev_base"].mean()
    agg["diag_pos_heads"] = heads[is_diag].groupby("condition", sort=False)["diag"].mean()
    agg["diag_pos_heads_base"] = heads[is_diag].groupby("condition", sort=False)["diag_base"].mean()
    del pos
    return summary.set_index("condition").join(agg)


def fmt_table(frame: pd.DataFrame, columns: list[str]) -> str:
    lines = ["| condition | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in frame.iterrows():
        cells = []
        for c in columns:
            v = row[c]
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="/tmp/rope-interp-findings-ablations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model("smollm2-135m", device="cpu")
    spec = RotarySpec.from_model(model)
    corpus = load_corpus(model, "pydoc", seq_len=args.seq_len, n_windows=args.windows, seed=0)
    stats = collect_pair_stats(model, corpus.batches(args.batch_size), progress=False)
    outliers, note = outlier_conditions(model, spec, stats, args.seq_len)
    conditions = (
        [Condition("clean")]
        + band_conditions(model, spec)
        + p_rope_conditions(model, spec)
        + phase_conditions(model, spec)
        + outliers
    )
    result = run_experiment(
        model,
        conditions,
        corpus,
        out_dir=args.out,
        settings=RunSettings(batch_size=args.batch_size, seed=0),
    )
    top = positional_heads(result.heads)
    table = per_condition(result.summary, result.heads, top)
    table["ci"] = [
        f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(table.ci_low, table.ci_high, strict=True)
    ]
    print(f"\nmodel: {spec.summary()}\ncorpus: {corpus.describe()}")
    print(f"clean loss: {table['loss_base'].iloc[0]:.4f} nats/token; outliers: {note}")
    print(f"positional heads (clean, top {len(top)} by max(prev, diag)):")
    print(top.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    cols = [
        "delta_loss",
        "ci",
        "prev_pos_heads",
        "diag_pos_heads",
        "first",
        "entropy",
        "max_weight",
        "kl",
    ]
    base = table.iloc[0]
    print(
        f"clean: prev(prev heads) {base.prev_pos_heads_base:.3f}, diag(diag heads) "
        f"{base.diag_pos_heads_base:.3f}, first {base.first_base:.3f}, entropy "
        f"{base.entropy_base:.3f}, max weight {base.max_weight_base:.3f}"
    )
    for family in ("band", "prope", "phase", "control", "outlier"):
        part = table[table["family"] == family] if "family" in table else table
        if len(part):
            print(f"\n### {family}\n" + fmt_table(part, cols))
    print(f"\n{len(conditions)} conditions, {time.perf_counter() - t0:.0f} s total")
    torch.set_printoptions()


if __name__ == "__main__":
    main()
