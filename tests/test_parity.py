"""Parity: rope-interp gives the same results whatever device or dtype the model is in.

For each fixture model, a twin with the same weights is moved to another device ("cpu" always,
so the harness cannot rot; "cuda" where one is present) or cast to another dtype, and the whole
report, the pair statistics, the decomposition of one layer and every intervention mode are
compared with the float32 CPU reference:
- another device: tables within 1e-4 relative (in the same row order), logits within 1e-5;
- float64 on the CPU: catches a tensor created with a hard-coded dtype the way a CUDA run
  catches one created on a hard-coded device (tables within 1e-4 of each column's scale,
  rows matched by their keys since near-equal values may swap);
- bfloat16: within what bf16 rounding allows (its unit roundoff u = 2⁻⁸, times the number of
  rounding steps between the compared quantities, see each test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rope_interp.ablation import Intervention, p_rope, position_shift, select_band, select_pairs
from rope_interp.capture import capture
from rope_interp.data import Corpus
from rope_interp.pairs import score_contributions
from rope_interp.report import build_report
from rope_interp.spec import RotarySpec
from rope_interp.stats import collect_pair_stats
from tests.helpers import FIXTURES, make_model, random_tokens

NAMES = sorted(FIXTURES)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="no CUDA device on this machine"
        ),
    ),
]
TABLE_RTOL = 1e-4
LOGIT_TOL = 1e-5
BF16_U = torch.finfo(torch.bfloat16).eps / 2  # unit roundoff, 2⁻⁸
# Columns that identify a row (never compared numerically, used to match rows).
KEYS = ("condition", "kind", "layer", "head", "offset", "pair", "band", "rank", "dim", "p")


def twin(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The fixture model with the reference weights, on `device` in `dtype`."""
    model = make_model(name)
    if dtype != torch.float32:
        model = model.to(dtype, print_details=False)
    if device != "cpu":
        model = model.to(device, print_details=False)
    return model


def tokens_for(model, batch: int = 2, pos: int = 16):
    return random_tokens(model, batch=batch, pos=pos)


# ---- the whole report ---------------------------------------------------------------------
_REPORTS: dict[tuple, dict] = {}


def report_tables(name: str, device: str = "cpu", dtype=torch.float32) -> dict:
    """`{(section, caption): frame}` of the standard report (cached per twin)."""
    key = (name, device, dtype)
    if key not in _REPORTS:
        model = twin(name, device, dtype)
        tokens = tokens_for(model)
        report = build_report(
            model, Corpus("random", tokens, False), progress=False, n_bootstrap=20
        )
        errors = {s.title: s.error for s in report.sections if s.error}
        assert not errors, f"{name} on {device} in {dtype}: {errors}"
        _REPORTS[key] = {
            (s.title, t.caption): t.frame for s in report.sections for t in s.iter_tables()
        }
    return _REPORTS[key]


def assert_frames_close(got: pd.DataFrame, ref: pd.DataFrame, rtol: float, what: str, *, by_keys):
    assert list(got.columns) == list(ref.columns), what
    assert len(got) == len(ref), f"{what}: {len(got)} rows, reference {len(ref)}"
    if by_keys:
        keys = [k for k in KEYS if k in ref.columns]
        got = got.sort_values(keys, kind="stable") if keys else got
        ref = ref.sort_values(keys, kind="stable") if keys else ref
    for column in ref.columns:
        a, b = got[column].to_numpy(), ref[column].to_numpy()
        if ref[column].dtype.kind in "fc":
            a, b = a.astype(float), b.astype(float)
            finite = np.isfinite(b)
            scale = np.abs(b[finite]).max() if finite.any() else 0.0
            close = np.isclose(a, b, rtol=rtol, atol=rtol * max(scale, 1e-12), equal_nan=True)
            bad = np.flatnonzero(~close)
            assert not len(bad), (
                f"{what}, column {column!r}: {len(bad)} of {len(b)} rows differ, e.g. row "
                f"{bad[0]}: {a[bad[0]]!r} vs reference {b[bad[0]]!r}"
            )
        else:
            assert list(a) == list(b), f"{what}, column {column!r} differs"


def assert_reports_match(got: dict, ref: dict, rtol: float, *, by_keys: bool) -> None:
    assert got.keys() == ref.keys()
    for key, frame in ref.items():
        assert_frames_close(got[key], frame, rtol, f"{key[0]} / {key[1]}", by_keys=by_keys)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_report_is_the_same_on_every_device(name, device):
    if device == "cpu":  # the harness itself: a second CPU twin, not the cached reference
        model = twin(name)
        report = build_report(
            model, Corpus("random", tokens_for(model), False), progress=False, n_bootstrap=20
        )
        got = {(s.title, t.caption): t.frame for s in report.sections for t in s.iter_tables()}
    else:
        got = report_tables(name, device)
    assert_reports_match(got, report_tables(name), TABLE_RTOL, by_keys=False)


@pytest.mark.parametrize("name", NAMES)
def test_report_in_float64_matches_float32(name):
    got = report_tables(name, dtype=torch.float64)
    assert_reports_match(got, report_tables(name), TABLE_RTOL, by_keys=True)


# ---- statistics, decomposition, interventions -------------------------------------------
def pair_stats_frame(model) -> pd.DataFrame:
    return collect_pair_stats(model, [tokens_for(model)], progress=False).to_frame()


def decomposition(model, layer: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair score terms and pass-through of `layer`, on the CPU in float64."""
    spec = RotarySpec.from_model(model)
    cap = capture(model, tokens_for(model), layers=layer)
    per_pair, pass_through = score_contributions(
        cap.q(layer), cap.k(layer), spec, layer, dtype=torch.float64
    )
    return per_pair.cpu(), pass_through.cpu()


def intervention_logits(model) -> dict[str, torch.Tensor]:
    """Logits (float64, CPU) of the clean model and under every intervention mode."""
    spec = RotarySpec.from_model(model)
    tokens = tokens_for(model)
    stats = collect_pair_stats(model, [tokens], progress=False)
    high = select_band(spec, "high", k=1)
    interventions = {
        "zero": Intervention(model, high, "zero", "both", spec=spec),
        "mean": Intervention(model, high, "mean", "both", stats=stats, spec=spec),
        "nope": Intervention(model, select_pairs(spec, [0, 1]), "nope", "both", spec=spec),
        "phase": Intervention(model, high, "phase", "q", phi=0.7, spec=spec),
        "shift": position_shift(model, 3, side="q", spec=spec),
        "p-rope": p_rope(model, 0.5, spec=spec),
    }
    out = {"clean": model(tokens).detach().double().cpu()}
    for mode, intervention in interventions.items():
        with torch.no_grad(), intervention:
            out[mode] = model(tokens).double().cpu()
        assert not torch.equal(out[mode], out["clean"]), f"{mode} changed nothing"
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_statistics_decomposition_and_interventions_on_every_device(name, device):
    ref, got = twin(name), twin(name, device)
    assert_frames_close(
        pair_stats_frame(got), pair_stats_frame(ref), TABLE_RTOL, "pair stats", by_keys=False
    )
    for a, b in zip(decomposition(got), decomposition(ref), strict=True):
        torch.testing.assert_close(a, b, rtol=TABLE_RTOL, atol=TABLE_RTOL * b.abs().max())
    ref_logits = intervention_logits(ref)
    for mode, logits in intervention_logits(got).items():
        torch.testing.assert_close(
            logits,
            ref_logits[mode],
            rtol=LOGIT_TOL,
            atol=LOGIT_TOL,
            msg=lambda m, mode=mode: f"{mode}: {m}",
        )


@pytest.mark.parametrize("name", NAMES)
def test_statistics_decomposition_and_interventions_in_float64(name):
    ref, got = twin(name), twin(name, dtype=torch.float64)
    assert_frames_close(
        pair_stats_frame(got), pair_stats_frame(ref), TABLE_RTOL, "pair stats", by_keys=False
    )
    for a, b in zip(decomposition(got), decomposition(ref), strict=True):
        torch.testing.assert_close(a, b, rtol=TABLE_RTOL, atol=TABLE_RTOL * b.abs().max())
    ref_logits = intervention_logits(ref)
    for mode, logits in intervention_logits(got).items():
        scale = ref_logits[mode].abs().max()
        torch.testing.assert_close(
            logits,
            ref_logits[mode],
            rtol=TABLE_RTOL,
            atol=TABLE_RTOL * scale,
            msg=lambda m, mode=mode: f"{mode}: {m}",
        )
