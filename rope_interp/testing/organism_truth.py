"""The planted truth of each organism against rope-interp's verdicts: the report's claims
computed by `build_report` on an organism's own task sequences, next to what its task plants.

    model = load_model("organism:positional")
    compare_verdicts(organism_claims(model, "positional"), "positional")

`TRUTH[name]` lists, per applicable claim (keyed by `CLAIMS`), the verdicts that match the
planted mechanism and why; a claim whose verdict is known to miss the planted truth carries the
verdict it gets and the reason in `known_miss` (docs/findings.md, "Ground truth on model
organisms"), so that a change either way shows up in tests/test_organisms.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from rope_interp.host import HostModel
from rope_interp.loading.organisms import organism, organism_corpus

#: Short keys for the report's claims: key → a phrase of the claim's text.
CLAIMS = {
    "usage": "most q/k norm sits in the lowest frequencies",
    "prev_high": "heads that use the highest frequencies are positional heads",
    "sinks_most": "attention sinks on the first token emerge",
    "sinks_low": "low-frequency pairs — build the attention sinks",
    "high_vs_low": "zeroing the highest frequencies costs more loss than zeroing the lowest",
    "high_vs_random": "the high-frequency quarter matters more than random pairs",
    "low_vs_random": "the low-frequency quarter matters more than random pairs",
    "breaks_prev": "zeroing the highest frequencies breaks the previous-token heads",
    "prope": "removing the lowest 25 % of frequencies (p-RoPE",
    "phase": "phase misalignment",
    "shift": "shifting every position leaves the loss unchanged",
}
#: The report sections whose claims have a planted truth on the organisms.
SECTIONS = ("usage", "positional", "sinks", "ablation_bands", "ablation_prope", "ablation_phase")


@dataclass(frozen=True)
class Truth:
    """What the task plants for one claim: `expected` verdicts, `planted` the reason; when the
    verdict misses it, `known_miss` says why the test cannot see it."""

    claim: str
    expected: tuple[str, ...]
    planted: str
    known_miss: str = ""


def organism_claims(model: HostModel, name: str, n_windows: int = 64, n_bootstrap: int = 500):
    """The report's claims (a `Report.claims` frame) on `n_windows` task sequences (seed 0)."""
    from rope_interp.report import build_report

    corpus = organism_corpus(name, n_windows, seed=0)
    report = build_report(model, corpus, sections=SECTIONS, progress=False, n_bootstrap=n_bootstrap)
    failed = [s.title for s in report.sections if s.error]
    if failed:
        raise RuntimeError(f"{name}: sections failed: {failed}")
    return report.claims


def compare_verdicts(claims: pd.DataFrame, name: str) -> pd.DataFrame:
    """One row per planted claim: organism, claim, planted, expected, verdict, number, match
    (verdict in expected), known_miss."""
    rows = []
    for truth in TRUTH[organism(name).name]:
        phrase = CLAIMS[truth.claim]
        hit = claims[claims.claim.str.contains(phrase, regex=False)]
        verdict = hit.verdict.iloc[0] if len(hit) else "missing"
        rows.append(
            {
                "organism": name,
                "claim": truth.claim,
                "planted": truth.planted,
                "expected": " or ".join(truth.expected),
                "verdict": verdict,
                "number": hit.number.iloc[0] if len(hit) else "",
                "match": verdict in truth.expected,
                "known_miss": truth.known_miss,
            }
        )
    return pd.DataFrame(rows)


_NO_PREV_SIGN = (
    "the check passes when the top previous-token head's attention change is below 0, with no "
    "tolerance: with no previous-token head, a change of about −0.001 (float noise of an "
    "unused band) counts as 'breaks'"
)
_NOT_TRAINED = (
    "the organism does not implement the planted mechanism cleanly (3000 steps: 40 % task "
    "accuracy, strongest previous-token head 0.24 at Δ = 1, in layer 1), so the verdict "
    "follows the model, not the plan"
)


def _content(breaks_prev_miss: bool) -> list[Truth]:
    low = "lowest pairs (in the twin without them: the NoPE dims)"
    return [
        Truth("usage", ("holds",), f"position-free matching puts q·k in the {low}"),
        Truth("prev_high", ("no evidence",), "no previous-token head: position is useless"),
        Truth("sinks_most", ("does not hold",), "no sink: every letter counts the same"),
        Truth("sinks_low", ("not tested here",), "no sink heads to test"),
        Truth("high_vs_low", ("does not hold",), "the high band carries no mechanism"),
        Truth("high_vs_random", ("does not hold",), "the high band carries no mechanism"),
        Truth("low_vs_random", ("holds",), "the content match lives in the low band"),
        Truth(
            "breaks_prev",
            ("does not hold",),
            "there is no previous-token head to break",
            _NO_PREV_SIGN if breaks_prev_miss else "",
        ),
        Truth(
            "prope",
            ("does not hold",),
            "NoPE on the high band changes nothing (unused); on the low band it changes the "
            "slow rotation the content head was trained with",
        ),
        Truth("phase", ("partly",), "only the low band's phase matters (the high band is unused)"),
        Truth("shift", ("holds",), "RoPE is relative"),
    ]


TRUTH: dict[str, list[Truth]] = {
    "positional": [
        Truth("prev_high", ("holds",), "a previous-token head built by rotation", _NOT_TRAINED),
        Truth("sinks_most", ("does not hold",), "no sink is needed"),
        Truth(
            "high_vs_random",
            ("holds", "partly"),
            "the previous-token head needs the high band",
            _NOT_TRAINED,
        ),
        Truth(
            "breaks_prev", ("holds",), "the previous-token head needs the high band", _NOT_TRAINED
        ),
        Truth("phase", ("holds",), "both bands carry a mechanism (offset, content match)"),
        Truth("shift", ("holds",), "RoPE is relative"),
    ],
    "content": _content(breaks_prev_miss=True),
    "content-rope": _content(breaks_prev_miss=False),
    "content-prope": _content(breaks_prev_miss=True),
    "sink": [
        Truth(
            "sinks_low",
            ("holds",),
            "one layer, a content-free first token: only slow pairs (θ·63 < π) can rank the "
            "farthest key first",
            "2 sink heads, top pairs 6 (lowest quarter) and 5 (θ = 0.056, θ·63 = 3.5: partial "
            "cycle but outside the lowest quarter); with n = 2 the Wilson interval cannot "
            "exclude the 25 % base rate: inconclusive",
        ),
        Truth("high_vs_low", ("does not hold",), "the sink needs the low band, not the high"),
        Truth(
            "low_vs_random",
            ("holds", "partly"),
            "the sink needs the low band",
            "the ramp also uses pair 5 (just above the lowest quarter), so random draws that "
            "take pairs 4–5 cost as much as the lowest two: inconclusive",
        ),
        Truth("shift", ("holds",), "RoPE is relative"),
    ],
}
