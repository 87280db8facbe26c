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

from rope_interp.core.capturing import capture
from rope_interp.core.pairs import expand_kv_heads, score_contributions, to_pairs
from rope_interp.core.spec import RotarySpec, theta_rtol
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.ablation import Intervention, p_rope, position_shift
from rope_interp.interventions.experiment import RunSettings
from rope_interp.interventions.selection import select_band, select_pairs
from rope_interp.loading.data import Corpus
from rope_interp.report import build_report
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
# A Δloss is a difference of two mean losses of ~ln(d_vocab) ≈ 4 nats, each carrying float32
# roundoff (≈ 4·6e-8 per term, summed over a few hundred tokens, and summed in another order on
# another device): a column of small Δs (a control median of −8e-4) inherits that absolute
# error, not one relative to the Δ (measured on an H200: 3.6e-7 at most).
DELTA_ATOL = 1e-5
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
            model, Corpus("random", tokens, False), settings=RunSettings(progress=False, n_boot=20)
        )
        errors = {s.title: s.error for s in report.sections if s.error}
        assert not errors, f"{name} on {device} in {dtype}: {errors}"
        _REPORTS[key] = {
            (s.title, t.caption): t.frame for s in report.sections for t in s.iter_tables()
        }
    return _REPORTS[key]


def assert_frames_close(
    got: pd.DataFrame, ref: pd.DataFrame, rtol: float, what: str, *, by_keys, atol: float = 0.0
):
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
            tol = max(rtol * scale, atol, 1e-12 * rtol)
            close = np.isclose(a, b, rtol=rtol, atol=tol, equal_nan=True)
            bad = np.flatnonzero(~close)
            assert not len(bad), (
                f"{what}, column {column!r}: {len(bad)} of {len(b)} rows differ, e.g. row "
                f"{bad[0]}: {a[bad[0]]!r} vs reference {b[bad[0]]!r}"
            )
        else:
            assert list(a) == list(b), f"{what}, column {column!r} differs"


def assert_reports_match(
    got: dict, ref: dict, rtol: float, *, by_keys: bool, atol: float = 0.0
) -> None:
    assert got.keys() == ref.keys()
    for key, frame in ref.items():
        what = f"{key[0]} / {key[1]}"
        assert_frames_close(got[key], frame, rtol, what, by_keys=by_keys, atol=atol)


# The whole report on the accelerator for every fixture; its CPU-twin form (which keeps the
# harness honest where no accelerator is present) and the float64 guard on two fixtures that
# between them cover both layouts, partial rotary and grouped-query attention (the statistics,
# decomposition and interventions below run on all four).
REPORT_CASES = [(name, "cuda") for name in NAMES] + [("gqa", "cpu")]
REPORT_CASES = [
    pytest.param(name, device, marks=DEVICES[1].marks) if device == "cuda" else (name, device)
    for name, device in REPORT_CASES
]


@pytest.mark.parametrize(("name", "device"), REPORT_CASES)
def test_report_is_the_same_on_every_device(name, device):
    if device == "cpu":  # the harness itself: a second CPU twin, not the cached reference
        model = twin(name)
        report = build_report(
            model,
            Corpus("random", tokens_for(model), False),
            settings=RunSettings(progress=False, n_boot=20),
        )
        got = {(s.title, t.caption): t.frame for s in report.sections for t in s.iter_tables()}
    else:
        got = report_tables(name, device)
    assert_reports_match(got, report_tables(name), TABLE_RTOL, by_keys=False, atol=DELTA_ATOL)


@pytest.mark.parametrize("name", ["gqa", "interleaved_partial"])
def test_report_in_float64_matches_float32(name):
    got = report_tables(name, dtype=torch.float64)
    assert_reports_match(got, report_tables(name), TABLE_RTOL, by_keys=True, atol=DELTA_ATOL)


# ---- statistics, decomposition, interventions -------------------------------------------
_REFERENCE: dict[str, dict] = {}


def reference(name: str) -> dict:
    """Statistics, decomposition and logits of the float32 CPU model (computed once)."""
    if name not in _REFERENCE:
        model = twin(name)
        _REFERENCE[name] = {
            "stats": pair_stats_frame(model),
            "decomposition": decomposition(model),
            "logits": intervention_logits(model),
        }
    return _REFERENCE[name]


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
    # rope-interp moves tokens itself; a direct call of a bridge needs them on its device.
    tokens = tokens_for(model).to(next(model.parameters()).device)
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
    ref, got = reference(name), twin(name, device)
    assert_frames_close(pair_stats_frame(got), ref["stats"], TABLE_RTOL, "stats", by_keys=False)
    for a, b in zip(decomposition(got), ref["decomposition"], strict=True):
        torch.testing.assert_close(a, b, rtol=TABLE_RTOL, atol=TABLE_RTOL * b.abs().max())
    for mode, logits in intervention_logits(got).items():
        torch.testing.assert_close(
            logits,
            ref["logits"][mode],
            rtol=LOGIT_TOL,
            atol=LOGIT_TOL,
            msg=lambda m, mode=mode: f"{mode}: {m}",
        )


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [
        (torch.float64, TABLE_RTOL),
        # Statistics: one rounding of q/k to bf16 (measured ≤ 1.7u of each column's scale);
        # logits: a few roundings per layer (measured ≤ 4.6u of the logit scale); fp16 alike.
        (torch.bfloat16, None),
        (torch.float16, None),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_statistics_decomposition_and_interventions_in_other_dtypes(name, dtype, rtol):
    u = torch.finfo(dtype).eps / 2
    stats_tol, logit_tol = (rtol, rtol) if rtol else (4 * u, 16 * u)
    ref, got = reference(name), twin(name, dtype=dtype)
    assert_frames_close(pair_stats_frame(got), ref["stats"], stats_tol, "stats", by_keys=False)
    if dtype == torch.float64:  # low-precision decompositions are checked against the model
        for a, b in zip(decomposition(got), ref["decomposition"], strict=True):
            torch.testing.assert_close(a, b, rtol=TABLE_RTOL, atol=TABLE_RTOL * b.abs().max())
    for mode, logits in intervention_logits(got).items():
        expected = ref["logits"][mode]
        torch.testing.assert_close(
            logits,
            expected,
            rtol=logit_tol,
            atol=logit_tol * expected.abs().max(),
            msg=lambda m, mode=mode: f"{mode}: {m}",
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_decomposition_is_exact_against_low_precision_hook_attn_scores(name, dtype):
    """The spec rotates by the model's own rounded cos/sin, so the decomposition (in float64)
    differs from `hook_attn_scores` only by the model's roundings: of the rotated q and k and
    of the score, each ≤ u relative. Bound: 4u·(Σ_i |z^q_i||z^k_i| + |q_pass·k_pass|)/scale +
    4u·|score| (measured ≤ 1.3u)."""
    model = twin(name, dtype=dtype)
    spec = RotarySpec.from_model(model)  # the config check passes on rounded buffers
    assert spec.cos[0].dtype == dtype
    u = torch.finfo(dtype).eps / 2
    tokens = tokens_for(model)
    _, cache = model.run_with_cache(tokens)
    causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()
    for layer in range(model.cfg.n_layers):
        q, k = cache["q", layer], cache["k", layer]
        per_pair, pass_through = score_contributions(q, k, spec, layer, dtype=torch.float64)
        got = per_pair.sum(-1) + pass_through
        expected = cache["attn_scores", layer].double()
        zq, q_pass = to_pairs(q.double(), spec)
        zk, k_pass = to_pairs(expand_kv_heads(k, q.shape[2]).double(), spec)
        magnitude = torch.einsum("bqhp,bkhp->bhqk", zq.abs(), zk.abs()) + torch.einsum(
            "bqhd,bkhd->bhqk", q_pass.abs(), k_pass.abs()
        )
        bound = 4 * u * (magnitude / spec.attn_scale + expected.abs())
        excess = ((got - expected).abs() - bound)[..., causal]
        assert excess.max() <= 0, f"layer {layer}: off by {excess.max():.3g} beyond the bound"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_spec_keeps_the_config_check(dtype):
    model = twin("half_full", dtype=dtype)
    reference_thetas = RotarySpec.from_model(twin("half_full")).thetas
    spec = RotarySpec.from_model(model)
    rel = ((spec.thetas - reference_thetas).abs() / reference_thetas).max()
    assert 0 < rel <= theta_rtol(dtype)  # rounded, within the tolerance the check allows
    model.cfg.rotary_base = 50  # a wrong config is still caught in low precision
    with pytest.raises(RopeInterpError, match=r"buffer θ=.*config formula θ=.*allowed"):
        RotarySpec.from_model(model)


def test_nothing_is_created_on_torch_s_default_device():
    """Every tensor rope-interp creates names its device: with torch's default device set to
    "meta" (as a user's `torch.set_default_device("cuda")` would move them), a tensor created
    without one lands there and the report fails (meta tensors hold no values; mixing them
    with CPU ones raises, as CUDA with CPU does)."""
    model = twin("gqa")
    corpus = Corpus("random", tokens_for(model), False)
    sections = ["geometry", "usage", "positional", "outliers", "sinks", "massive", "spectra"]
    torch.set_default_device("meta")
    try:
        report = build_report(
            model,
            corpus,
            sections=[*sections, "ablation_prope"],
            settings=RunSettings(progress=False, n_boot=5),
        )
    finally:
        torch.set_default_device(None)
    assert {s.title: s.error for s in report.sections if s.error} == {}
