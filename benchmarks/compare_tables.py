"""Compare two report table folders (`rope-interp report --save-tables DIR`) column by column.

    python benchmarks/compare_tables.py REFERENCE_DIR OTHER_DIR [--tolerance 0.05]

For every CSV present in both, every numeric column: the largest |other − reference| divided by
the column's scale (max |reference|), rows matched by their key columns. Prints one line per
table and exits 1 if any table's deviation exceeds `--tolerance` (or its rows differ).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ("condition", "kind", "layer", "head", "offset", "pair", "band", "rank", "dim", "p")


def deviation(ref: pd.DataFrame, other: pd.DataFrame) -> tuple[float, str]:
    """(largest scale-relative difference over numeric columns, the column where it is)."""
    keys = [k for k in KEYS if k in ref.columns and k in other.columns]
    if keys:
        ref = ref.sort_values(keys, kind="stable").reset_index(drop=True)
        other = other.sort_values(keys, kind="stable").reset_index(drop=True)
    worst, where = 0.0, ""
    for column in ref.columns:
        if column in keys or column not in other or ref[column].dtype.kind not in "fiu":
            continue
        a, b = other[column].to_numpy(float), ref[column].to_numpy(float)
        finite = np.isfinite(a) & np.isfinite(b)
        if not finite.any():
            continue
        scale = max(np.abs(b[finite]).max(), 1e-12)
        dev = float(np.abs(a[finite] - b[finite]).max() / scale)
        if dev > worst:
            worst, where = dev, column
    return worst, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args(argv)
    failed = False
    for ref_path in sorted(args.reference.glob("*.csv")):
        other_path = args.other / ref_path.name
        if not other_path.exists():
            print(f"{ref_path.name}: missing in {args.other}")
            failed = True
            continue
        ref, other = pd.read_csv(ref_path), pd.read_csv(other_path)
        if len(ref) != len(other):
            print(f"{ref_path.name}: {len(other)} rows vs {len(ref)} in the reference")
            failed = True
            continue
        dev, column = deviation(ref, other)
        flag = "  <-- beyond tolerance" if dev > args.tolerance else ""
        print(f"{ref_path.name}: max deviation {dev:.2e} of the column scale ({column}){flag}")
        failed |= dev > args.tolerance
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
