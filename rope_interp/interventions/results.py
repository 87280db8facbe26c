"""An experiment's result tables, built from the records of its conditions, and the merge of
the run directories of shards.

From a condition's record (per-sequence losses, per-(layer, head) metric sums; see
`run_store`): one summary row with Δloss and its percentile bootstrap interval over
sequences, one row per (layer, head), one row per sequence. `merge_results` concatenates the
per-sequence losses of shards (exact) and adds their sums, so the merged tables are those of
one run over all their sequences.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rope_interp.errors import RopeInterpError
from rope_interp.interventions.measures import METRICS
from rope_interp.interventions.run_store import note, read_record, write_record
from rope_interp.utils.atomic import write_table

_HTML_ROWS = 12  # conditions shown in a notebook before "... and N more"


@dataclass
class ExperimentResult:
    """`summary`: one row per condition; `heads`: one per (condition, layer, head);
    `sequences`: one per (condition, sequence) with `loss_base`, `loss`, `delta_loss` and a
    `sequence_id` (hash of the sequence's tokens), for paired contrasts (`contrasts`);
    `skipped`: conditions reused from the run directory; `model`: the model's name."""

    summary: pd.DataFrame
    heads: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    sequences: pd.DataFrame = field(default_factory=pd.DataFrame)
    model: str = ""

    def _repr_html_(self) -> str:
        """A compact notebook view: model, conditions, windows and tokens, Δloss with CIs."""
        summary = self.summary
        facts = [f"{len(summary)} condition(s)"]
        if self.model:
            facts.insert(0, f"model {self.model}")
        if len(summary) and {"n_sequences", "n_tokens"} <= set(summary.columns):
            windows, tokens = int(summary["n_sequences"].iloc[0]), int(summary["n_tokens"].iloc[0])
            per = f" × {tokens // windows}" if windows else ""
            facts.append(f"{windows} window(s){per} tokens ({tokens} tokens)")
        if self.skipped:
            facts.append(f"{len(self.skipped)} reused from the run directory")
        rows = []
        for _, row in summary.head(_HTML_ROWS).iterrows():
            low, high = row.get("ci_low", math.nan), row.get("ci_high", math.nan)
            ci = "—" if np.isnan(low) or np.isnan(high) else f"[{low:+.4f}, {high:+.4f}]"
            rows.append(
                f"<tr><td>{html.escape(str(row['condition']))}</td>"
                f"<td>{row['delta_loss']:+.4f}</td><td>{ci}</td></tr>"
            )
        more = len(summary) - _HTML_ROWS
        if more > 0:
            rows.append(f'<tr><td colspan="3">… and {more} more (see .summary)</td></tr>')
        return (
            '<div class="rope-interp-result"><p><b>ExperimentResult</b>: '
            + html.escape(" · ".join(facts))
            + "</p><table><thead><tr><th>condition</th><th>Δloss (nats/token)</th>"
            "<th>95 % CI</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table><p><small>.summary, .heads, .sequences</small></p></div>"
        )


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over the given per-sequence values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _tables(record: dict) -> tuple[dict, list[dict]]:
    """A complete record → its summary row and its per-(layer, head) rows."""
    loss = np.asarray(record["losses"], dtype=np.float64)
    base = np.asarray(record["losses_base"], dtype=np.float64)
    diff = loss - base
    low, high = bootstrap_ci(diff, record["n_boot"], record["seed"])
    summary = {
        "condition": record["name"],
        **record["describe"],
        "first_layer": record["first_layer"],
        "n_sequences": len(diff),
        "n_tokens": record["n_tokens"],
        "loss_base": float(base.mean()),
        "loss": float(loss.mean()),
        "delta_loss": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
    }
    head_rows: list[dict] = []
    if record["attention"]:
        rows = record["rows"]
        sums = {m: np.asarray(v) for m, v in record["sums"].items()}
        base_sums = {m: np.asarray(v) for m, v in record["base_sums"].items()}
        n_layers, n_heads = sums["kl"].shape
        for layer in range(n_layers):
            affected = layer >= record["first_layer"]
            for head in range(n_heads):
                row = {"condition": record["name"], "layer": layer, "head": head}
                for name in METRICS:
                    base_value = 0.0 if name == "kl" else float(base_sums[name][layer, head])
                    value = float(sums[name][layer, head]) if affected else base_value
                    row[name] = value / rows
                    if name != "kl":
                        row[f"{name}_base"] = base_value / rows
                head_rows.append(row)
    return summary, head_rows


def result_from_records(records: list[dict], skipped: list[str]) -> ExperimentResult:
    """The tables of complete records, in their order."""
    summaries, heads, sequences = [], [], []
    for record in records:
        summary, head_rows = _tables(record)
        summaries.append(summary)
        heads.extend(head_rows)
        loss = np.asarray(record["losses"], dtype=np.float64)
        base = np.asarray(record["losses_base"], dtype=np.float64)
        sequences.append(
            pd.DataFrame(
                {
                    "condition": record["name"],
                    "sequence": np.arange(len(loss)),
                    "sequence_id": record["sequence_ids"],
                    "loss_base": base,
                    "loss": loss,
                    "delta_loss": loss - base,
                }
            )
        )
    sequence_frame = (
        pd.concat(sequences, ignore_index=True)
        if sequences
        else pd.DataFrame(columns=["condition", "sequence", "sequence_id", "delta_loss"])
    )
    return ExperimentResult(
        summary=pd.DataFrame(summaries),
        heads=pd.DataFrame(heads),
        skipped=skipped,
        sequences=sequence_frame,
        model=next((r["model_name"] for r in records if r.get("model_name")), ""),
    )


def write_result_tables(out_dir: str | Path, result: ExperimentResult) -> None:
    """`summary.csv`, `heads.csv` and `sequences.csv` in a run directory, each atomically."""
    write_table(result.summary, Path(out_dir) / "summary.csv")
    write_table(result.heads, Path(out_dir) / "heads.csv")
    write_table(result.sequences, Path(out_dir) / "sequences.csv")


def merge_results(
    dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    conditions: Sequence[str] | None = None,
) -> ExperimentResult:
    """Combine the run directories of shards (disjoint sequences, same model, code, conditions
    and settings) into one result, as if one run had taken their sequences in the given order:
    per-sequence losses are concatenated (exact), metric sums and row counts added.

    `conditions`: the names of the conditions in the order of the run (rows of the tables come
    in this order); default: every finished condition, in the order of their file names."""
    if not dirs:
        raise RopeInterpError("merge_results needs at least one run directory.")
    merged: dict[str, dict] = {}
    order: list[str] = []
    for directory in dirs:
        store = Path(directory) / "conditions"
        if not store.is_dir():
            raise RopeInterpError(f"{directory} is not a run directory (no conditions/ folder).")
        for path in sorted(store.glob("*.json")):
            record = read_record(path)
            if record is None or not record.get("complete"):
                note(f"{path}: unreadable or unfinished condition file; left out of the merge")
                continue
            name = record["name"]
            if name not in merged:
                merged[name] = json.loads(json.dumps(record))
                order.append(name)
                continue
            _fold(merged[name], record, path)
    if not merged:
        raise RopeInterpError(f"No finished conditions in {[str(d) for d in dirs]}.")
    if conditions is not None:
        missing = [name for name in conditions if name not in merged]
        if missing:
            raise RopeInterpError(f"No finished record of condition(s) {missing} in the shards.")
        order = list(conditions)
    counts = {name: len(merged[name]["losses"]) for name in order}
    if len(set(counts.values())) > 1:
        raise RopeInterpError(
            f"The shards do not cover the same conditions: sequences per condition {counts}."
        )
    result = result_from_records([merged[n] for n in order], skipped=[])
    if out_dir is not None:
        for name in order:
            write_record(Path(out_dir) / "conditions", merged[name])
        write_result_tables(out_dir, result)
    return result


def _fold(into: dict, record: dict, path: Path) -> None:
    """Add one shard's record of a condition to the merged record (in place)."""
    mine, theirs = into["parts"], record["parts"]
    for part in ("model", "code", "settings", "condition"):
        if mine.get(part) != theirs.get(part):
            raise RopeInterpError(
                f"{path}: condition {record['name']!r} was run with a different {part} than in "
                "the first shard; merge only shards of one experiment."
            )
    overlap = set(into["sequence_ids"]) & set(record["sequence_ids"])
    if overlap:
        raise RopeInterpError(
            f"{path}: {len(overlap)} sequence(s) of condition {record['name']!r} are already in "
            "another shard; shards must hold disjoint sequences."
        )
    for field_name in ("sequence_ids", "losses", "losses_base"):
        into[field_name] = into[field_name] + record[field_name]
    into["rows"] += record["rows"]
    for table in ("sums", "base_sums"):
        for metric in METRICS:
            total = np.asarray(into[table][metric]) + np.asarray(record[table][metric])
            into[table][metric] = total.tolist()
    into["n_tokens"] += record["n_tokens"]
    into["parts"] = {**mine, "tokens": None}
    into["key"] = None
