"""Do the report's tables agree between the two TransformerLens hosts?

Compares two folders of tables written by `rope-interp report --save-tables DIR`, one run under
TransformerLens 3.x (`HookedTransformer`) and one under 4.x (`TransformerBridge`), same model,
corpus, windows and seed. Every numeric column of every table is compared row by row; the error
is max |a − b| divided by the column's scale (its largest |value|, at least 1e-12). Text columns
(the Claims table's sentences) must be equal once their numbers are taken out, and each number
in them must agree within the tolerance times max(1, |number|).

    bash scripts/setup_tl3.sh && rope-interp report --save-tables /tmp/tl3 --out /tmp/tl3.html
    bash scripts/setup.sh && rope-interp report --save-tables /tmp/tl4 --out /tmp/tl4.html
    python benchmarks/host_parity.py /tmp/tl3 /tmp/tl4 [--tolerance 1e-4]

Prints one line per table (its worst column and error) and exits 1 if any exceeds the
tolerance or any table is missing on one side.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

_NUMBER = re.compile(r"[-+−]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.IGNORECASE)
# Columns that say which host or run produced a table, not what it measured.
_IGNORED = {"seconds", "run_time", "model"}


def compare_tables(a: pd.DataFrame, b: pd.DataFrame) -> tuple[str, float, str]:
    """(worst column, its scaled error, problem or ""): a's and b's columns row by row."""
    if list(a.columns) != list(b.columns):
        return "", float("inf"), f"columns differ: {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        return "", float("inf"), f"{len(a)} rows vs {len(b)}"
    worst, worst_error = "", 0.0
    for column in a.columns:
        if column in _IGNORED:
            continue
        left, right = a[column], b[column]
        if pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right):
            x, y = left.to_numpy(np.float64), right.to_numpy(np.float64)
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                return column, float("inf"), "NaN in different rows"
            finite = ~np.isnan(x)
            if not finite.any():
                continue
            scale = max(np.abs(x[finite]).max(), np.abs(y[finite]).max(), 1e-12)
            error = float(np.abs(x[finite] - y[finite]).max() / scale)
            if error > worst_error:
                worst, worst_error = column, error
        else:
            for x, y in zip(map(str, left), map(str, right), strict=True):
                error = _text_error(x, y)
                if error == float("inf"):
                    return column, error, f"text differs: {x!r} vs {y!r}"
                if error > worst_error:
                    worst, worst_error = column, error
    return worst, worst_error, ""


def _text_error(x: str, y: str) -> float:
    """inf if the texts differ beyond their numbers, else the largest difference of their
    numbers, each scaled by max(1, |number|)."""
    if _NUMBER.sub("#", x) != _NUMBER.sub("#", y):
        return float("inf")
    pairs = zip(_NUMBER.findall(x), _NUMBER.findall(y), strict=True)
    values = [(float(a.replace("−", "-")), float(b.replace("−", "-"))) for a, b in pairs]
    return max((abs(a - b) / max(1.0, abs(a), abs(b)) for a, b in values), default=0.0)


def compare_folders(first: Path, second: Path) -> dict[str, tuple[str, float, str]]:
    """Table file name → (worst column, scaled error, problem) for every CSV in either folder."""
    names = sorted({p.name for p in first.glob("*.csv")} | {p.name for p in second.glob("*.csv")})
    results = {}
    for name in names:
        if not (first / name).is_file() or not (second / name).is_file():
            side = first if not (first / name).is_file() else second
            results[name] = ("", float("inf"), f"missing in {side}")
            continue
        results[name] = compare_tables(pd.read_csv(first / name), pd.read_csv(second / name))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="tables of one host (--save-tables DIR)")
    parser.add_argument("second", type=Path, help="tables of the other host")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    results = compare_folders(args.first, args.second)
    if not results:
        print(f"no tables in {args.first} or {args.second}", file=sys.stderr)
        return 1
    failed = 0
    for name, (column, error, problem) in results.items():
        ok = not problem and error <= args.tolerance
        failed += not ok
        detail = problem or f"worst column {column or '-'}: {error:.1e}"
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    print(f"{len(results) - failed} of {len(results)} tables within {args.tolerance:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
