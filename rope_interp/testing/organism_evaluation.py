"""Task accuracy of an organism, clean and under the band ablations with their random-pair
controls: the causal ground truth the report's verdicts are compared with.

The conditions are the report's band group (`conditions.standard_conditions`, group "band":
zero the highest / lowest quarter of the pairs in q and k of every head, and seeded random
selections of the same size), measured here on what the task determines instead of on the mean
loss: top-1 accuracy on the scored queries of fresh task sequences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.host import HostModel
from rope_interp.interventions.conditions import standard_conditions
from rope_interp.loading.organism_tasks import scored_prediction, task_batch
from rope_interp.loading.organisms import organism


def task_accuracy(model: HostModel, task: str, tokens, scored, hooks=()) -> float:
    """Top-1 accuracy on the scored queries of `tokens` `[n, seq]`, with `hooks` attached."""
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=list(hooks))
    right = scored_prediction(task, tokens, logits.cpu())
    return float(right[scored].float().mean())


def ablation_accuracy(
    model: HostModel, name: str, n_sequences: int = 256, seed: int = 20_000, n_random: int = 20
) -> pd.DataFrame:
    """Task accuracy of organism `name` (loaded as `model`): clean, with the high quarter of
    the pairs zeroed, the low quarter, and `n_random` random controls of the same size. One
    row per condition: condition, band (clean | high | low | random), accuracy."""
    task = organism(name).task
    tokens, scored = task_batch(task, n_sequences, seed=seed)
    tokens = tokens.to(model.cfg.device)
    spec = RotarySpec.from_model(model)
    rows = [
        {
            "condition": "clean",
            "band": "clean",
            "accuracy": task_accuracy(model, task, tokens, scored),
        }
    ]
    for condition in standard_conditions(model, spec, groups=("band",), n_random=n_random):
        accuracy = task_accuracy(model, task, tokens, scored, condition.all_hooks())
        rows.append(
            {"condition": condition.name, "band": condition.params["band"], "accuracy": accuracy}
        )
    return pd.DataFrame(rows)


def accuracy_summary(table: pd.DataFrame) -> dict[str, float]:
    """clean, high, low accuracy and the random controls' min, median and max."""
    by_band = table.groupby("band").accuracy
    randoms = table[table.band == "random"].accuracy.to_numpy()
    return {
        "clean": float(by_band.first()["clean"]),
        "high": float(by_band.first()["high"]),
        "low": float(by_band.first()["low"]),
        "random_min": float(randoms.min()) if len(randoms) else float("nan"),
        "random_median": float(np.median(randoms)) if len(randoms) else float("nan"),
        "random_max": float(randoms.max()) if len(randoms) else float("nan"),
    }
