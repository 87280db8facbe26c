"""The experiment runner: tables, prefix reuse, resume, reversibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.ablation import Intervention, attached_hooks, p_rope
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment
from rope_interp.interventions.measures import attention_kl, row_metrics, sequence_losses
from rope_interp.interventions.results import bootstrap_ci
from rope_interp.interventions.selection import select_band, select_pairs
from tests.helpers import make_model, random_tokens


def _conditions(model):
    spec = RotarySpec.from_model(model)
    return [
        Condition("clean"),
        Condition("high 1", Intervention(model, select_band(spec, "high", k=1))),
        Condition("p=0.5 layer 1", p_rope(model, 0.5, layers=[1]), params={"p": 0.5}),
    ]


def test_tables_and_clean_control(tiny_model):
    tokens = random_tokens(tiny_model, batch=6, pos=16)
    with torch.no_grad():
        before = tiny_model(tokens)
    result = run_experiment(
        tiny_model,
        _conditions(tiny_model),
        tokens,
        settings=RunSettings(batch_size=4, progress=False),
    )
    summary, heads = result.summary.set_index("condition"), result.heads
    assert list(summary.index) == ["clean", "high 1", "p=0.5 layer 1"]
    assert summary.loc["clean", "delta_loss"] == 0.0
    assert summary.loc["p=0.5 layer 1", "first_layer"] == 1
    assert summary.loc["p=0.5 layer 1", "p"] == 0.5
    row = summary.loc["high 1"]
    assert row.delta_loss != 0 and row.ci_low <= row.delta_loss <= row.ci_high
    assert row.n_sequences == 6 and row.n_tokens == 96
    assert len(heads) == 3 * tiny_model.cfg.n_layers * tiny_model.cfg.n_heads
    clean = heads[heads.condition == "clean"]
    assert (clean.kl.abs() < 1e-6).all()
    for metric in ("diag", "prev", "first", "entropy", "max_weight"):
        np.testing.assert_allclose(clean[metric], clean[f"{metric}_base"], atol=1e-6)
    late = heads[heads.condition == "p=0.5 layer 1"]
    assert (late[late.layer == 0].kl == 0).all() and (late[late.layer == 1].kl > 0).any()
    with torch.no_grad():
        assert torch.equal(tiny_model(tokens), before)
    assert attached_hooks(tiny_model) == []


def test_prefix_reuse_equals_full_forwards(tiny_model):
    tokens = random_tokens(tiny_model, batch=4, pos=16)
    conditions = _conditions(tiny_model) + [
        Condition(
            "identity hook at layer 1", hooks=[("blocks.1.hook_resid_pre", lambda x, hook: x)]
        )
    ]
    fast = run_experiment(tiny_model, conditions, tokens, settings=RunSettings(progress=False))
    slow = run_experiment(
        tiny_model, conditions, tokens, settings=RunSettings(reuse_prefix=False, progress=False)
    )
    np.testing.assert_allclose(fast.summary.delta_loss, slow.summary.delta_loss, atol=1e-6)
    for metric in ("kl", "diag", "prev", "first", "entropy", "max_weight"):
        np.testing.assert_allclose(fast.heads[metric], slow.heads[metric], atol=1e-5)
    # resuming from the cached residual stream is exact
    assert fast.summary.set_index("condition").loc["identity hook at layer 1", "delta_loss"] == 0


def test_resume_skips_finished_conditions(tmp_path, tiny_model):
    tokens = random_tokens(tiny_model, batch=4, pos=12)
    first = run_experiment(
        tiny_model,
        _conditions(tiny_model),
        tokens,
        out_dir=tmp_path,
        settings=RunSettings(progress=False),
    )
    assert first.skipped == []
    assert (tmp_path / "summary.csv").is_file() and (tmp_path / "heads.csv").is_file()
    assert not list(tmp_path.rglob("*.tmp"))

    def explode(x, hook):
        raise AssertionError("a finished condition was run again")

    conditions = _conditions(tiny_model)
    conditions[1].hooks.append(("blocks.0.hook_resid_pre", explode))  # changes its key: re-run
    with pytest.raises(AssertionError):
        run_experiment(
            tiny_model, conditions, tokens, out_dir=tmp_path, settings=RunSettings(progress=False)
        )
    again = run_experiment(
        tiny_model,
        _conditions(tiny_model),
        tokens,
        out_dir=tmp_path,
        settings=RunSettings(progress=False),
    )
    assert again.skipped == ["clean", "high 1", "p=0.5 layer 1"]
    assert again.summary.equals(first.summary)
    # different tokens → nothing is reused
    other = run_experiment(
        tiny_model,
        _conditions(tiny_model),
        tokens.flip(1),
        out_dir=tmp_path,
        settings=RunSettings(progress=False),
    )
    assert other.skipped == []


def test_interrupted_experiment_leaves_model_untouched(tmp_path, tiny_model):
    tokens = random_tokens(tiny_model, batch=4, pos=12)
    with torch.no_grad():
        before = tiny_model(tokens)
    calls = []

    def fail_late(x, hook):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("interrupted")

    conditions = _conditions(tiny_model)
    conditions.append(Condition("fails", hooks=[("blocks.1.attn.hook_q", fail_late)]))
    with pytest.raises(RuntimeError, match="interrupted"):
        run_experiment(
            tiny_model,
            conditions,
            tokens,
            out_dir=tmp_path,
            settings=RunSettings(batch_size=2, progress=False),
        )
    assert attached_hooks(tiny_model) == []
    with torch.no_grad():
        assert torch.equal(tiny_model(tokens), before)
    # the conditions that finished before the failure are on disk and are skipped next time
    done = run_experiment(
        tiny_model,
        _conditions(tiny_model),
        tokens,
        out_dir=tmp_path,
        settings=RunSettings(batch_size=2, progress=False),
    )
    assert done.skipped == ["clean", "high 1", "p=0.5 layer 1"]


def test_bad_input():
    model = make_model("half_full")
    tokens = random_tokens(model)
    with pytest.raises(RopeInterpError, match="unique"):
        run_experiment(
            model, [Condition("a"), Condition("a")], tokens, settings=RunSettings(progress=False)
        )
    with pytest.raises(RopeInterpError, match="integer tensor"):
        run_experiment(model, [Condition("a")], tokens[0], settings=RunSettings(progress=False))


def test_metric_maths():
    pattern = torch.tensor([[1.0, 0, 0], [0.25, 0.75, 0], [0.5, 0.25, 0.25]])[None, None]
    m = row_metrics(pattern)  # rows 1 and 2
    torch.testing.assert_close(m["diag"], torch.tensor([1.0]))
    torch.testing.assert_close(m["prev"], torch.tensor([0.25 + 0.25]))
    torch.testing.assert_close(m["first"], torch.tensor([0.75]))
    torch.testing.assert_close(m["max_weight"], torch.tensor([1.25]))
    assert attention_kl(pattern, pattern).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.5, 0.25, 0.25]])[None, None]
    expected = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    assert attention_kl(pattern, other).item() == pytest.approx(expected, rel=1e-5)
    logits = torch.zeros(1, 3, 4)
    assert sequence_losses(logits, torch.tensor([[0, 1, 2]])).item() == pytest.approx(np.log(4))
    low, high = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]), seed=0)
    assert low < 2.5 < high and bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]), seed=0) == (low, high)


@pytest.mark.real_model
def test_real_model_resume_from_layer_and_reversibility(real_model):
    """On SmolLM2: a layer-20 condition resumes from the cached residual stream (layers < 20
    untouched, KL 0), changes the loss, and leaves the model's logits bit for bit unchanged.
    (Prefix reuse = full forwards is checked on every tiny model.)"""
    spec = RotarySpec.from_model(real_model, check_config=False)
    tokens = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = real_model(tokens)
    sel = select_pairs(spec, range(4), layers=20)
    conditions = [Condition("zero 0-3 @20", Intervention(real_model, sel, spec=spec))]
    result = run_experiment(real_model, conditions, tokens, settings=RunSettings(progress=False))
    row = result.summary.iloc[0]
    assert row.first_layer == 20 and row.delta_loss != 0
    heads = result.heads
    assert (heads[heads.layer < 20].kl == 0).all() and (heads[heads.layer == 20].kl > 0).any()
    with torch.no_grad():
        assert torch.equal(real_model(tokens), before)
    assert attached_hooks(real_model) == []


def test_plots_from_tables():
    import plotly.graph_objects as go

    from rope_interp.plots.ablation import delta_loss_bars, delta_loss_curves, head_metric_heatmap

    model = make_model("half_full")
    spec = RotarySpec.from_model(model)
    conditions = [
        Condition(
            f"{end} {k}",
            Intervention(model, select_band(spec, end, k=k)),
            params={"k": k, "band": end},
        )
        for end in ("high", "low")
        for k in (1, 2)
    ]
    result = run_experiment(
        model, conditions, random_tokens(model, batch=3), settings=RunSettings(progress=False)
    )
    assert isinstance(delta_loss_bars(result.summary), go.Figure)
    fig = delta_loss_curves(result.summary, x="k", group="band")
    assert len(fig.data) == 2
    heat = head_metric_heatmap(result.heads, "high 1", "diag", change=True)
    assert heat.data[0].z.shape == (model.cfg.n_layers, model.cfg.n_heads)
    with pytest.raises(RopeInterpError, match="No rows"):
        head_metric_heatmap(result.heads, "nope")
    with pytest.raises(RopeInterpError, match="column"):
        delta_loss_curves(result.summary, x="phi")


def test_cached_unembedding_forward_is_bit_identical(tiny_model):
    from rope_interp.interventions.experiment import _Forward

    tokens = random_tokens(tiny_model)
    forward = _Forward(tiny_model)
    assert forward.weight is not None
    with torch.no_grad():
        assert torch.equal(forward(tokens, 0), tiny_model(tokens))
        resid = tiny_model(tokens, stop_at_layer=1)
        assert torch.equal(forward(resid, 1), tiny_model(resid, start_at_layer=1))
        assert torch.equal(_Forward(tiny_model, fast=False)(tokens, 0), tiny_model(tokens))


def test_phase_sweep_curves_start_at_the_origin():
    import pandas as pd

    from rope_interp.plots.ablation import phase_sweep_curves

    table = pd.DataFrame(
        {
            "band": ["low", "high", "low"],
            "phi": [3.0, 1.0, 1.0],
            "delta_loss": [2.0, 0.5, 1.0],
            "d_entropy": [0.1, 0.2, 0.3],
            "d_max_weight": [-0.1, -0.2, -0.3],
        }
    )
    figure = phase_sweep_curves(table)
    assert len(figure.data) == 6  # 2 bands × 3 metrics
    low_loss = next(t for t in figure.data if t.name == "low band" and t.xaxis == "x")
    assert list(low_loss.x) == [0.0, 1.0, 3.0] and list(low_loss.y) == [0.0, 1.0, 2.0]


def test_notebook_view_is_a_compact_escaped_summary():
    """`ExperimentResult._repr_html_`: model, conditions, windows × tokens, Δloss with CIs;
    every name from the user is HTML-escaped."""
    model = make_model("gqa")
    model.cfg.model_name = "tiny <i>model</i>"
    spec = RotarySpec.from_model(model)
    conditions = [
        Condition("<script>alert(1)</script>", Intervention(model, select_band(spec, "high", k=1))),
        Condition("clean & control"),
    ]
    result = run_experiment(model, conditions, random_tokens(model, batch=4, pos=8),
                            settings=RunSettings(n_boot=50, progress=False))  # fmt: skip
    page = result._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<i>model</i>" not in page and "tiny &lt;i&gt;model&lt;/i&gt;" in page
    assert "clean &amp; control" in page
    assert "2 condition(s)" in page and "4 window(s) × 8 tokens (32 tokens)" in page
    row = result.summary.iloc[0]
    assert f"{row.delta_loss:+.4f}" in page
    assert f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]" in page
    assert page.count("<tr>") == 3  # header and one row per condition


# ---- RunSettings: one checked object; the older keyword arguments, deprecated -----------------
def test_run_settings_are_checked_when_made_and_frozen():
    import dataclasses

    for bad, match in (
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"n_boot": -3}, "n_boot must be a positive integer"),
        ({"pattern_dtype": torch.int64}, "pattern_dtype must be a floating dtype"),
        ({"checkpoint_seconds": -1.0}, "checkpoint_seconds must be a number ≥ 0"),
    ):
        with pytest.raises(RopeInterpError, match=match):
            RunSettings(**bad)
    settings = RunSettings(batch_size=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch_size = 0


def test_keyword_arguments_warn_once_give_the_same_numbers_and_never_mix(monkeypatch):
    import warnings

    from rope_interp.interventions import experiment

    monkeypatch.setattr(experiment, "_WARNED", set())
    model = make_model("half_full")
    tokens = random_tokens(model, batch=4, pos=8)
    conditions = _conditions(model)
    settings = RunSettings(batch_size=2, n_boot=30, seed=3, progress=False)
    with pytest.warns(DeprecationWarning, match=r"settings=RunSettings\(\.\.\.\)"):
        old = run_experiment(model, conditions, tokens, batch_size=2, n_boot=30, seed=3,
                             progress=False)  # fmt: skip
    new = run_experiment(model, conditions, tokens, settings=settings)
    pd.testing.assert_frame_equal(old.summary, new.summary)  # the same run, CIs included
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        run_experiment(model, conditions, tokens, n_boot=30, progress=False)
    assert not [w for w in again if issubclass(w.category, DeprecationWarning)]  # told once
    with pytest.raises(RopeInterpError, match="not both"):
        run_experiment(model, conditions, tokens, settings=settings, batch_size=4)
    with pytest.raises(RopeInterpError, match="not both"):  # even when they would agree
        run_experiment(model, conditions, tokens, settings=settings, progress=False)
    with pytest.raises(TypeError, match="n_bootstrap"):
        run_experiment(model, conditions, tokens, n_bootstrap=30)
    with pytest.raises(RopeInterpError, match="batch_size must be a positive integer"):
        run_experiment(model, conditions, tokens, batch_size=0)  # the old path is checked too


def test_the_sanity_shift_fits_the_windows_in_the_rotary_tables(tiny_model):
    """Windows that end within 16 positions of the model's tables get a smaller shift, and
    windows that fill them get none; each shift that is run leaves the loss unchanged."""
    from rope_interp.core.spec import RotarySpec
    from rope_interp.interventions.conditions import standard_conditions
    from rope_interp.interventions.experiment import RunSettings, run_experiment

    spec = RotarySpec.from_model(tiny_model)
    table = min(int(c.shape[0]) for c in spec.cos)

    def shifts(seq_len):
        conditions = standard_conditions(tiny_model, spec, groups=("sanity",), seq_len=seq_len)
        return [c.params["delta"] for c in conditions]

    assert shifts(None) == [16] and shifts(table - 40) == [16]
    assert shifts(table - 5) == [5] and shifts(table) == []
    tokens = random_tokens(tiny_model, batch=2, pos=table - 5)
    (condition,) = standard_conditions(tiny_model, spec, groups=("sanity",), seq_len=table - 5)
    result = run_experiment(
        tiny_model, [condition], tokens, settings=RunSettings(n_boot=20, progress=False)
    )
    assert abs(float(result.summary.delta_loss.iloc[0])) < 1e-4
