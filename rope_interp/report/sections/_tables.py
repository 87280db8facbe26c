"""Table helpers the section builders share."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Columns that name a row, used to break ties when sorting by a measured value.
_ROW_KEYS = ("kind", "layer", "head", "offset", "pair", "rank", "dim")


def descending(frame: pd.DataFrame, column: str, digits: int = 6) -> pd.DataFrame:
    """`frame` sorted by `column` (largest first) rounded to `digits` significant digits, ties
    broken by the row's own keys: the same order on every device, although CPU and CUDA sums
    differ in the last bits."""
    values = frame[column].astype(float)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(values.abs().where(values != 0, 1.0))))
    rounded = ((values * scale).round() / scale).where(np.isfinite(values), values)
    keys = [name for name in _ROW_KEYS if name in frame.columns]
    order = pd.DataFrame({"_value": -rounded, **{k: frame[k] for k in keys}}, index=frame.index)
    return frame.loc[order.sort_values(["_value", *keys], kind="stable").index]
