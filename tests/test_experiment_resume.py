"""The runner's resume keys, per-sequence results, shard merges, O(batch) memory and paired
contrasts."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pandas as pd
import pytest
import torch

import rope_interp.interventions.experiment as experiment
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.ablation import Intervention
from rope_interp.interventions.conditions import standard_conditions
from rope_interp.interventions.contrasts import (
    band_contrasts,
    control_distribution,
    paired_contrast,
    random_controls,
)
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment
from rope_interp.interventions.results import merge_results
from rope_interp.interventions.selection import select_band
from rope_interp.utils.fingerprint import callable_identity, model_fingerprint
from tests.helpers import make_model, random_tokens


@pytest.fixture
def model():
    return make_model("half_full")


def _band(model, end="high"):
    spec = RotarySpec.from_model(model)
    return Condition(f"zero {end} 1", Intervention(model, select_band(spec, end, k=1)))


def _scale_resid(x, hook):
    return x * 0.5


def _negate_resid(x, hook):
    return -x


def _run(model, conditions, tokens, out, **fields):
    settings = RunSettings(**{"progress": False, **fields})
    return run_experiment(model, conditions, tokens, out_dir=out, settings=settings)


def test_bootstrap_change_recomputes_with_a_note(tmp_path, model, capsys):
    tokens = random_tokens(model, batch=6, pos=12)
    first = _run(model, [_band(model)], tokens, tmp_path, n_boot=200)
    again = _run(model, [_band(model)], tokens, tmp_path, n_boot=200)
    assert again.skipped == ["zero high 1"]
    capsys.readouterr()
    fewer = _run(model, [_band(model)], tokens, tmp_path, n_boot=10)
    err = capsys.readouterr().err
    assert fewer.skipped == []
    assert err.count("\n") == 1 and "n_boot 200 → 10" in err and "recomputing" in err
    fresh = run_experiment(
        model, [_band(model)], tokens, settings=RunSettings(n_boot=10, progress=False)
    )
    pd.testing.assert_frame_equal(fewer.summary, fresh.summary)
    assert fewer.summary.ci_low[0] != first.summary.ci_low[0]
    other_seed = _run(model, [_band(model)], tokens, tmp_path, n_boot=10, seed=1)
    assert other_seed.skipped == []


def test_other_hook_function_under_the_same_name_recomputes(tmp_path, model, capsys):
    tokens = random_tokens(model, batch=4, pos=12)
    scaled = Condition("mine", hooks=[("blocks.1.hook_resid_pre", _scale_resid)])
    negated = Condition("mine", hooks=[("blocks.1.hook_resid_pre", _negate_resid)])
    _run(model, [scaled], tokens, tmp_path)
    capsys.readouterr()
    stale = _run(model, [negated], tokens, tmp_path)
    assert stale.skipped == [] and "hook code changed" in capsys.readouterr().err
    truth = run_experiment(model, [negated], tokens, settings=RunSettings(progress=False))
    assert stale.summary.delta_loss[0] == truth.summary.delta_loss[0]

    # a closure is keyed by the values it closes over, too
    def scale_by(factor):
        def hook(x, hook):
            return x * factor

        return hook

    half = Condition("closure", hooks=[("blocks.1.hook_resid_pre", scale_by(0.5))])
    double = Condition("closure", hooks=[("blocks.1.hook_resid_pre", scale_by(2.0))])
    _run(model, [half], tokens, tmp_path)
    assert _run(model, [half], tokens, tmp_path).skipped == ["closure"]
    assert _run(model, [double], tokens, tmp_path).skipped == []


def test_hooks_without_source_are_never_reused(tmp_path, model, capsys):
    namespace: dict = {}
    exec("def made(x, hook):\n    return x * 0.5\n", namespace)
    assert callable_identity(namespace["made"]) is None
    assert callable_identity(lambda x, hook: x) is not None  # a lambda in a file has source
    tokens = random_tokens(model, batch=2, pos=8)
    condition = Condition("exec", hooks=[("blocks.1.hook_resid_pre", namespace["made"])])
    _run(model, [condition], tokens, tmp_path)
    capsys.readouterr()
    assert _run(model, [condition], tokens, tmp_path).skipped == []
    assert "no readable source" in capsys.readouterr().err


def test_in_place_weight_edit_recomputes(tmp_path, model, capsys):
    tokens = random_tokens(model, batch=4, pos=12)
    before = model_fingerprint(model)
    first = _run(model, [_band(model)], tokens, tmp_path)
    with torch.no_grad():
        model.blocks[0].mlp.W_out[0, 0] += 1.0
    assert model_fingerprint(model) != before
    capsys.readouterr()
    edited = _run(model, [_band(model)], tokens, tmp_path)
    assert edited.skipped == [] and "weights changed" in capsys.readouterr().err
    truth = run_experiment(model, [_band(model)], tokens, settings=RunSettings(progress=False))
    assert edited.summary.delta_loss[0] == truth.summary.delta_loss[0]
    assert edited.summary.loss_base[0] != first.summary.loss_base[0]


@pytest.mark.parametrize("garbage", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'{"format": 2}'])
def test_garbage_condition_file_recomputes_with_a_note(tmp_path, model, capsys, garbage):
    tokens = random_tokens(model, batch=2, pos=8)
    first = _run(model, [_band(model)], tokens, tmp_path)
    (path,) = (tmp_path / "conditions").glob("*.json")
    path.write_bytes(garbage)
    capsys.readouterr()
    again = _run(model, [_band(model)], tokens, tmp_path)
    assert again.skipped == [] and "unreadable" in capsys.readouterr().err
    pd.testing.assert_frame_equal(again.summary, first.summary)
    assert json.loads(path.read_text())["complete"] is True  # repaired


def test_per_sequence_losses_are_kept_and_merge_exactly(tmp_path, model):
    tokens = random_tokens(model, batch=8, pos=12)
    conditions = lambda: [Condition("clean"), _band(model, "high"), _band(model, "low")]  # noqa: E731
    whole = _run(model, conditions(), tokens, tmp_path / "all", batch_size=2)
    seqs = whole.sequences
    assert len(seqs) == 3 * 8 and set(seqs.condition) == {"clean", "zero high 1", "zero low 1"}
    means = seqs.groupby("condition", sort=False).delta_loss.mean()
    np.testing.assert_array_equal(means.to_numpy(), whole.summary.delta_loss.to_numpy())
    assert (tmp_path / "all" / "sequences.csv").is_file()

    _run(model, conditions(), tokens[:4], tmp_path / "a", batch_size=2)
    _run(model, conditions(), tokens[4:], tmp_path / "b", batch_size=2)
    merged = merge_results([tmp_path / "a", tmp_path / "b"], out_dir=tmp_path / "merged")
    pd.testing.assert_frame_equal(merged.summary, whole.summary)
    pd.testing.assert_frame_equal(merged.sequences, whole.sequences)
    pd.testing.assert_frame_equal(merged.heads, whole.heads, check_exact=False, rtol=1e-12)
    with pytest.raises(RopeInterpError, match="disjoint"):
        merge_results([tmp_path / "a", tmp_path / "a"])
    _run(model, conditions(), tokens[4:], tmp_path / "c", batch_size=2, n_boot=50)
    with pytest.raises(RopeInterpError, match="settings"):
        merge_results([tmp_path / "a", tmp_path / "c"])


def test_clean_patterns_are_held_for_one_batch_only(model, monkeypatch):
    """Memory O(batch): the clean patterns of a batch are freed before the next batch runs."""
    alive: list[list[weakref.ref]] = []
    original = experiment._clean_batch

    def spy(*args, **kwargs):
        gc.collect()
        for older in alive[:-1]:
            assert all(ref() is None for ref in older), "an earlier batch's patterns survive"
        clean = original(*args, **kwargs)
        alive.append([weakref.ref(t) for t in [*clean.patterns.values(), *clean.resid.values()]])
        return clean

    monkeypatch.setattr(experiment, "_clean_batch", spy)
    spec = RotarySpec.from_model(model)
    late = Condition("late", Intervention(model, select_band(spec, "high", k=1, layers=[1])))
    run_experiment(
        model,
        [late],
        random_tokens(model, batch=8, pos=8),
        settings=RunSettings(batch_size=2, progress=False),
    )
    assert len(alive) == 4 and all(alive)
    gc.collect()
    assert all(ref() is None for refs in alive for ref in refs)


def test_interrupted_run_resumes_from_the_last_checkpoint_bit_identically(tmp_path, model):
    tokens = random_tokens(model, batch=8, pos=10)
    calls = []

    def fail_third(x, hook):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    settings = RunSettings(batch_size=2, progress=False, checkpoint_seconds=0.0)
    conditions = [_band(model), Condition("boom", hooks=[("blocks.0.attn.hook_q", fail_third)])]
    with pytest.raises(KeyboardInterrupt):
        run_experiment(model, conditions, tokens, out_dir=tmp_path, settings=settings)
    saved = json.loads(next((tmp_path / "conditions").glob("zero_high*.json")).read_text())
    assert saved["complete"] is False and saved["batches_done"] == 2
    resumed = run_experiment(model, [_band(model)], tokens, out_dir=tmp_path, settings=settings)
    straight = run_experiment(model, [_band(model)], tokens, settings=settings)
    pd.testing.assert_frame_equal(resumed.summary, straight.summary, check_exact=True)
    pd.testing.assert_frame_equal(resumed.heads, straight.heads, check_exact=True)


def test_paired_contrasts_and_control_distribution(model):
    spec = RotarySpec.from_model(model)
    conditions = standard_conditions(model, spec, groups=("band",), n_random=5)
    result = run_experiment(
        model,
        conditions,
        random_tokens(model, batch=6, pos=12),
        settings=RunSettings(progress=False),
    )
    summary = result.summary.set_index("condition")
    high, low = "zero high 1", "zero low 1"
    contrast = paired_contrast(result, high, low, n_boot=300, seed=1)
    # paired: the same as the difference of the two conditions' mean Δloss
    expected = summary.loc[high, "delta_loss"] - summary.loc[low, "delta_loss"]
    assert contrast["delta"] == pytest.approx(expected, abs=1e-12)
    assert contrast["ci_low"] <= contrast["delta"] <= contrast["ci_high"]
    assert contrast["n_sequences"] == 6
    # an independent paired bootstrap of the per-sequence differences
    seqs = result.sequences.pivot(index="sequence", columns="condition", values="loss")
    diff = (seqs[high] - seqs[low]).to_numpy()
    rng = np.random.default_rng(1)
    boots = diff[rng.integers(0, 6, (300, 6))].mean(1)
    assert contrast["ci_low"] == pytest.approx(np.percentile(boots, 2.5))
    controls = random_controls(result)
    assert len(controls) == 5
    versus = paired_contrast(result, high, controls)
    assert versus["delta"] == pytest.approx(
        summary.loc[high, "delta_loss"] - summary.loc[controls, "delta_loss"].mean(), abs=1e-12
    )
    table = band_contrasts(result, n_boot=100)
    assert len(table) == 3 and table.contrast[0] == f"{high} − {low}"
    places = control_distribution(result).set_index("band")
    draws = summary.loc[controls, "delta_loss"].to_numpy()
    for end, name in (("high", high), ("low", low)):
        value = summary.loc[name, "delta_loss"]
        share = ((draws < value).sum() + 0.5 * (draws == value).sum()) / 5 * 100
        assert places.loc[end, "percentile"] == share
    with pytest.raises(RopeInterpError, match="Unknown condition"):
        paired_contrast(result, high, "nope")


def test_standard_conditions_have_twenty_random_controls_by_default(model):
    spec = RotarySpec.from_model(model)
    conditions = standard_conditions(model, spec, groups=("band",))
    randoms = [c for c in conditions if c.params.get("band") == "random"]
    assert len(randoms) == 20
    masks = {tuple(c.intervention.selection.mask.flatten().tolist()) for c in randoms}
    assert len(masks) > 1  # seeded draws differ
    with pytest.raises(RopeInterpError, match="n_random"):
        standard_conditions(model, spec, n_random=-2)


def test_random_control_strip_marks_the_bands():
    from rope_interp.plots.ablation import random_control_strip

    summary = pd.DataFrame(
        {
            "condition": ["zero high 8", "zero low 8", "r1", "r2", "r3"],
            "band": ["high", "low", "random", "random", "random"],
            "delta_loss": [2.5, 3.0, 1.5, 3.2, 2.4],
        }
    )
    places = pd.DataFrame({"band": ["high", "low"], "percentile": [66.7, 66.7]})
    figure = random_control_strip(summary, places)
    assert list(figure.data[0].x) == [1.5, 3.2, 2.4]
    lines = [shape.x0 for shape in figure.layout.shapes]
    assert lines == [2.5, 3.0]
    labels = [a.text for a in figure.layout.annotations]
    assert labels == ["high band +2.500 (67th percentile)", "low band +3.000 (67th percentile)"]
    with pytest.raises(RopeInterpError, match="column"):
        random_control_strip(summary.drop(columns="band"))


def test_weights_are_hashed_only_where_a_result_can_be_reused(model, monkeypatch, tmp_path):
    """No run directory, no model hash (it costs a pass over every weight); with one, the hash
    is computed once per model and kept until a weight changes."""
    from rope_interp.interventions import experiment
    from rope_interp.utils import fingerprint

    weights = {t.data_ptr() for t in model.state_dict().values()}
    calls = []  # weight tensors hashed (tokens and selections are hashed too: cheap)
    hashed = fingerprint._update_tensor

    def counting(digest, tensor):
        if tensor.data_ptr() in weights:
            calls.append(1)
        hashed(digest, tensor)

    monkeypatch.setattr(fingerprint, "_update_tensor", counting)
    tokens = random_tokens(model, batch=2, pos=8)
    run_experiment(model, [_band(model)], tokens, settings=RunSettings(progress=False))
    assert calls == []
    _run(model, [_band(model)], tokens, tmp_path)
    first = len(calls)
    assert first > 0
    assert experiment.model_fingerprint(model) == model_fingerprint(model)
    assert len(calls) == first  # kept
    with torch.no_grad():
        next(model.parameters()).mul_(1.0)  # an in-place edit bumps the version counter
    model_fingerprint(model)
    assert len(calls) == 2 * first


def test_progress_moves_with_every_condition_pass(model, capsys):
    """The bar counts tokens of condition passes: 3 conditions × 2 batches of 2 × 8 tokens."""
    tokens = random_tokens(model, batch=4, pos=8)
    conditions = [_band(model), _band(model, "low")]
    conditions.append(
        Condition("zero all", Intervention(model, conditions[0].intervention.selection, "zero"))
    )
    run_experiment(model, conditions, tokens, settings=RunSettings(batch_size=2, progress=True))
    err = capsys.readouterr().err
    assert "3 condition(s)" in err and "96.0/96.0" in err, err[-300:]
