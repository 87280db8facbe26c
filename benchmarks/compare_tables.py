"""Compare two report table folders (`rope-interp report --save-tables DIR`) column by column:
another device or dtype against a float32 CPU run, or one TransformerLens host against the other.

    python benchmarks/compare_tables.py REFERENCE_DIR OTHER_DIR [--tolerance 0.05]
    python benchmarks/compare_tables.py TABLES_TL3 TABLES_TL4 --tolerance 1e-4   # hosts

For every CSV, every numeric column: the largest |other − reference| divided by the column's
scale (max |reference|), rows matched by their key columns; NaNs must sit in the same rows. Text
columns (the Claims table's sentences) must be equal once their numbers are taken out, and each
number in them must agree within the tolerance times max(1, |number|). Prints one line per table
and exits 1 if any table's deviation exceeds `--tolerance`, its rows differ, or it is missing on
either side.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ("condition", "kind", "layer", "head", "offset", "pair", "band", "rank", "dim", "p")


_NUMBER = re.compile(r"[-+−]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.IGNORECASE)


def deviation(ref: pd.DataFrame, other: pd.DataFrame) -> tuple[float, str]:
    """(largest scale-relative difference over the columns, the column where it is); inf where
    NaNs sit in different rows or a text differs beyond its numbers."""
    keys = [k for k in KEYS if k in ref.columns and k in other.columns]
    if keys:
        ref = ref.sort_values(keys, kind="stable").reset_index(drop=True)
        other = other.sort_values(keys, kind="stable").reset_index(drop=True)
    worst, where = 0.0, ""
    for column in ref.columns:
        if column in keys or column not in other:
            continue
        if ref[column].dtype.kind in "fiu" and other[column].dtype.kind in "fiu":
            a, b = other[column].to_numpy(float), ref[column].to_numpy(float)
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                return float("inf"), f"{column} (NaN in different rows)"
            finite = np.isfinite(a) & np.isfinite(b)
            if not finite.any():
                continue
            scale = max(np.abs(b[finite]).max(), 1e-12)
            dev = float(np.abs(a[finite] - b[finite]).max() / scale)
        else:
            pairs = zip(map(str, ref[column]), map(str, other[column]), strict=True)
            dev = max((_text_deviation(x, y) for x, y in pairs), default=0.0)
        if dev > worst:
            worst, where = dev, column
    return worst, where


def _text_deviation(x: str, y: str) -> float:
    """inf if the texts differ beyond their numbers, else the largest difference of their
    numbers, each scaled by max(1, |number|)."""
    if _NUMBER.sub("#", x) != _NUMBER.sub("#", y):
        return float("inf")
    pairs = zip(_NUMBER.findall(x), _NUMBER.findall(y), strict=True)
    values = [(float(a.replace("−", "-")), float(b.replace("−", "-"))) for a, b in pairs]
    return max((abs(a - b) / max(1.0, abs(a), abs(b)) for a, b in values), default=0.0)


def compare_folders(reference: Path, other: Path, tolerance: float) -> list[tuple[str, bool]]:
    """(line to print, within tolerance) for every CSV in either folder."""
    results = []
    names = sorted(
        {p.name for p in reference.glob("*.csv")} | {p.name for p in other.glob("*.csv")}
    )
    for name in names:
        missing = [str(d) for d in (reference, other) if not (d / name).is_file()]
        if missing:
            results.append((f"{name}: missing in {missing[0]}", False))
            continue
        ref, oth = pd.read_csv(reference / name), pd.read_csv(other / name)
        if len(ref) != len(oth):
            results.append((f"{name}: {len(oth)} rows vs {len(ref)} in the reference", False))
            continue
        dev, column = deviation(ref, oth)
        flag = "  <-- beyond tolerance" if dev > tolerance else ""
        line = f"{name}: max deviation {dev:.2e} of the column scale ({column}){flag}"
        results.append((line, dev <= tolerance))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args(argv)
    results = compare_folders(args.reference, args.other, args.tolerance)
    for line, _ in results:
        print(line)
    ok = sum(within for _, within in results)
    print(f"{ok} of {len(results)} tables within {args.tolerance:g}")
    return 0 if results and ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
