"""The HTML report: rendering (one plotly.js, escaping, sortable tables, metadata) and the
standard report built on tiny models (every section computed, interventions undone)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import rope_interp.report
from rope_interp.analysis.statistics import wilson_interval
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.conditions import PHASES, standard_conditions
from rope_interp.interventions.experiment import RunSettings
from rope_interp.loading.data import Corpus
from rope_interp.report import (
    SECTION_BUILDERS,
    STANDARD_SECTIONS,
    VERDICTS,
    Claim,
    Report,
    Section,
    build_report,
    resolve_sections,
)
from rope_interp.report import section as register_section
from rope_interp.report.sections.outliers import outlier_claims
from rope_interp.report.verdicts import (
    contrast_and_controls_verdict,
    correlation_verdict,
    count_verdict,
    enrichment_verdict,
    interval_verdict,
    share_verdict,
)
from tests.helpers import make_model, random_tokens

PLOTLY_MARKER = "plotly.js v"  # the bundle's licence header names its version once


def _figure(n: int = 3) -> go.Figure:
    return go.Figure(go.Scatter(x=list(range(n)), y=list(range(n))))


def test_render_inlines_plotly_once_and_draws_every_figure():
    report = Report("t", meta={"model": "tiny"})
    report.add(Section("A", figures=[_figure(), _figure()]))
    report.add(Section("B", figures=[_figure()], tables=[("t", pd.DataFrame({"x": [1]}))]))
    page = report.to_html()
    assert page.count(PLOTLY_MARKER) == 1
    assert page.count("Plotly.newPlot(") == 3
    assert len(set(re.findall(r'id="(figure-\d+)"', page))) == 3
    assert "<script src" not in page and "<link" not in page  # nothing fetched when opened
    assert '<table class="data">' in page and "click to sort" in page


def test_render_without_figures_has_no_plotly():
    page = Report("t").add(Section("only text", prose="hello")).to_html()
    assert PLOTLY_MARKER not in page
    assert "<p>hello</p>" in page


def test_render_escapes_user_text():
    report = Report("<script>alert(1)</script>", meta={"corpus": "<b>x</b>"})
    frame = pd.DataFrame({"name": ["<img src=x onerror=alert(1)>"], "v": [1.5]})
    report.add(Section("<i>t</i>", how_to_read="a `code` & b", tables=[("<c>", frame)]))
    page = report.to_html()
    assert "<script>alert(1)</script>" not in page
    assert "<img src=x" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<code>code</code> &amp; b" in page


def test_tables_are_truncated_with_a_note_and_saved_in_full(tmp_path):
    frame = pd.DataFrame({"i": range(1000), "x": [0.5] * 1000, "s": ["a"] * 1000})
    report = Report("t").add(Section("S").add_table("big one", frame, max_rows=10))
    page = report.to_html()
    assert page.split("<h3>big one</h3>")[1].count("<tr>") == 1 + 10
    assert "first 10 of 1000 rows" in page
    path = report.write(tmp_path / "r.html", tables_dir=tmp_path / "tables")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    saved = pd.read_csv(tmp_path / "tables" / "s-big-one.csv")
    assert len(saved) == 1000


def test_numbers_keep_sortable_raw_values():
    frame = pd.DataFrame({"v": [1e-7, 123456.0, float("nan")], "n": [1, 2, 3]})
    page = Report("t").add(Section("S", tables=[("c", frame)])).to_html()
    assert 'data-v="1e-07"' in page and ">1.000e-07<" in page and ">NaN<" in page


def test_write_requires_html(tmp_path):
    with pytest.raises(RopeInterpError, match=r"\.html"):
        Report("t").write(tmp_path / "r.pdf")


def test_resolve_sections():
    assert resolve_sections(None) == list(SECTION_BUILDERS)
    assert resolve_sections(["usage", "geometry"]) == ["geometry", "usage"]
    with pytest.raises(RopeInterpError, match="Unknown report section"):
        resolve_sections(["usage", "nope"])


def test_standard_conditions_groups():
    model = make_model("half_full")
    spec = RotarySpec.from_model(model)
    names = [c.name for c in standard_conditions(model, spec, groups=("band",), n_random=2)]
    assert names == ["zero high 1", "zero low 1", "zero random 1 #1", "zero random 1 #2"]
    with pytest.raises(RopeInterpError, match="Unknown ablation group"):
        standard_conditions(model, spec, groups=("bands",))


@pytest.fixture(scope="module")
def tiny_report():
    model = make_model("gqa")
    tokens = random_tokens(model, batch=4, pos=40)
    before = model(tokens)
    corpus = Corpus("random tokens", tokens, prepend_bos=False)
    report = build_report(
        model,
        corpus,
        Corpus("random tokens", tokens[:2], False),
        settings=RunSettings(progress=False, n_boot=50),
    )
    after = model(tokens)
    return report, before, after, model


def test_standard_report_builds_every_section(tiny_report):
    report, *_ = tiny_report
    errors = {s.title: s.details for s in report.sections if s.error}
    assert not errors, errors
    titles = [s.title for s in report.sections]
    assert titles == [title for title, _ in SECTION_BUILDERS.values()]
    for section in report.sections:
        assert section.how_to_read, section.title
        assert section.key_result, section.title  # listed "at a glance" at the top
        assert section.figures or section.tables, section.title
        assert section.seconds is not None
    for key in ("corpus", "seed", "libraries", "run time", "rotary"):
        assert key in report.meta
    assert "torch" in report.meta["libraries"]


def test_standard_report_leaves_the_model_unchanged(tiny_report):
    report, before, after, model = tiny_report
    assert torch.equal(before, after)
    assert not any(point.fwd_hooks for point in model.hook_dict.values())


def test_ablation_tables_have_confidence_intervals(tiny_report):
    report, *_ = tiny_report
    bands = next(s for s in report.sections if s.title.startswith("Ablation: high"))
    tables = {table.caption: table.frame for table in bands.iter_tables()}
    table = tables["Conditions"]
    assert {"delta_loss", "ci_low", "ci_high"} <= set(table.columns)
    assert len(table) == 2 + 20  # high, low, twenty random controls
    paired = tables["Paired contrasts"]
    assert len(paired) == 3 and {"delta", "ci_low", "ci_high"} <= set(paired.columns)
    places = tables["Where the bands fall among the random controls"]
    assert list(places.band) == ["high", "low"] and (places.n_controls == 20).all()
    assert "percentile of 20 random controls" in bands.key_result
    assert any("random draws" in str(trace.name) for f in bands.figures for trace in f.data)
    phase = next(s for s in report.sections if s.title.startswith("Ablation: phase"))
    sanity = "position shift" in " ".join(next(iter(phase.iter_tables())).frame.condition)
    assert sanity and "relative encoding" in phase.prose


def test_phase_section_sweeps_both_signs_and_follows_the_previous_token_head(tiny_report):
    report, _, _, model = tiny_report
    phase = next(s for s in report.sections if s.title.startswith("Ablation: phase"))
    tables = list(phase.iter_tables())
    mechanism = tables[1].frame
    assert list(mechanism.condition[:1]) == ["clean"] and len(mechanism) == 1 + 2 * len(PHASES)
    for band in ("high", "low"):
        assert sorted(mechanism[mechanism.band == band].phi) == sorted(PHASES)
    assert "φ = ±0.79" in phase.key_result
    # The clean row, independently: the head with the most previous-token attention on the
    # ablation corpus (tokens[:2]), its weight on itself, the previous and the first token.
    tokens = random_tokens(model, batch=4, pos=40)[:2]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    best = None
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double()[:, :, 1:]  # rows ≥ 1
        prev = pattern.diagonal(offset=0, dim1=-2, dim2=-1).mean((0, 2))
        self_ = pattern.diagonal(offset=1, dim1=-2, dim2=-1).mean((0, 2))
        first = pattern[..., 0].mean((0, 2))
        for head in range(model.cfg.n_heads):
            if best is None or prev[head] > best[0]:
                best = (float(prev[head]), float(self_[head]), float(first[head]))
    clean = mechanism.iloc[0]
    assert (clean.prev, clean.self, clean.first) == pytest.approx(best, abs=1e-6)


def test_the_report_reads_the_spec_once(monkeypatch):
    """build_report binds the spec (and with it the backend) once; every section, analysis,
    capture and intervention is handed it instead of reading it from the model again."""
    reads = []
    from_model = RotarySpec.from_model.__func__

    def counted(cls, model, check_config=True):
        reads.append(check_config)
        return from_model(cls, model, check_config)

    monkeypatch.setattr(RotarySpec, "from_model", classmethod(counted))
    model = make_model("gqa")
    corpus = Corpus("random tokens", random_tokens(model, batch=2, pos=24), False)
    report = build_report(model, corpus, progress=False, n_bootstrap=20)
    assert [s.error for s in report.sections] == [None] * len(report.sections)
    assert len(report.sections) >= len(STANDARD_SECTIONS)
    assert reads == [True]


def test_a_failing_section_does_not_cost_the_report(monkeypatch, tmp_path):
    def broken(ctx):
        raise ValueError("boom")

    monkeypatch.setitem(SECTION_BUILDERS, "usage", ("Frequency usage", broken))
    model = make_model("half_full")
    corpus = Corpus("random", random_tokens(model, batch=2, pos=16), False)
    report = build_report(
        model, corpus, sections=["geometry", "usage"], settings=RunSettings(progress=False)
    )
    assert [s.error for s in report.sections] == [None, "ValueError: boom"]
    page = report.to_html()
    assert "Not computed" in page and "boom" in page and "not computed: ValueError" in page


@pytest.mark.parametrize("name", ["interleaved_partial", "ntk_by_parts"])
def test_statistics_sections_on_other_layouts(name):
    model = make_model(name)
    corpus = Corpus("random", random_tokens(model, batch=2, pos=24), False)
    report = build_report(
        model,
        corpus,
        sections=["geometry", "usage", "outliers"],
        settings=RunSettings(progress=False),
    )
    assert [s.error for s in report.sections] == [None, None, None]


def test_plots_package_reexports_figure_functions():
    import rope_interp.plots as plots

    assert plots.plot_usage_map is plots.analysis.plot_usage_map
    assert plots.delta_loss_bars is plots.ablation.delta_loss_bars
    with pytest.raises(AttributeError):
        plots.no_such_figure  # noqa: B018


def test_notebook_display_shows_headlines_escaped():
    report = Report("<t>", meta={"model": "tiny"})
    report.add(Section("A", key_result="x = 1", figures=[_figure()]))
    report.add(Section("B", error="ValueError: <boom>"))
    shown = report._repr_html_()
    assert shown.startswith("<b>&lt;t&gt;</b> (1 figures)")
    assert "<tr><th>model</th><td>tiny</td></tr>" in shown and "x = 1" in shown
    assert "ValueError: &lt;boom&gt;" in shown and "plotly" not in shown


def test_section_names_need_no_torch():
    # The command line offers and checks section names before it imports any analysis.
    code = (
        "import sys; from rope_interp.report import resolve_sections, section_names; "
        "print(resolve_sections(None) == section_names(), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_standard_sections_are_all_registered_in_order():
    assert [(name, title) for name, (title, _) in SECTION_BUILDERS.items()] == list(
        STANDARD_SECTIONS.items()
    )


def test_templates_ship_with_the_package():
    templates = Path(rope_interp.report.__file__).parent / "templates"
    names = {path.name for path in templates.iterdir()}
    assert {"report.html.j2", "section.html.j2", "table.html.j2", "notebook.html.j2"} <= names
    assert {"report.css", "sort.js"} <= names


def test_a_section_of_your_own_runs_after_the_standard_ones():
    @register_section("mine", "My section")
    def mine(ctx):
        return Section("My section", key_result=f"{ctx.spec.n_pairs} pairs")

    try:
        assert list(SECTION_BUILDERS)[-1] == "mine" and resolve_sections(None)[-1] == "mine"
        model = make_model("half_full")
        corpus = Corpus("random", random_tokens(model, batch=2, pos=16), False)
        report = build_report(
            model, corpus, sections=["mine", "geometry"], settings=RunSettings(progress=False)
        )
        assert [s.title for s in report.sections] == ["Rotary geometry", "My section"]
        assert report.sections[1].key_result.endswith("pairs")
    finally:
        SECTION_BUILDERS.pop("mine")


def test_claims_table_collects_every_section_claim(tiny_report, tmp_path):
    report, *_ = tiny_report
    claims = report.claims
    emitted = [(s.title, c.claim) for s in report.sections for c in s.claims]
    assert list(zip(claims.section, claims.claim, strict=True)) == emitted
    assert len(claims) >= 15  # every standard section but the geometry tests a claim
    for column in ("claim", "number", "test", "uncertainty", "verdict"):
        assert claims[column].str.strip().str.len().gt(0).all(), column
    assert set(claims.verdict) <= set(VERDICTS)
    assert {s.title for s in report.sections if s.claims} == {
        title for name, (title, _) in SECTION_BUILDERS.items() if name != "geometry"
    }
    page = report.to_html()
    top = page.split('<h3 id="claims">Claims</h3>')[1].split("<section")[0]
    assert top.count("<tr>") == 1 + len(claims)  # the header and one row per claim
    assert page.index("At a glance") < page.index('id="claims"') < page.index("<section")
    for view_anchor in re.findall(r'<a href="#([^"]+)">', top):
        assert f'<section id="{view_anchor}">' in page
    saved = pd.read_csv(report.write(tmp_path / "r.html", tmp_path / "t").parent / "t/claims.csv")
    assert list(saved.claim) == list(claims.claim)
    assert "Claims" in report._repr_html_()


def test_massive_section_adds_the_residual_stream_activations(tiny_report):
    report, *_ = tiny_report
    massive = next(s for s in report.sections if s.title == "Massive values")
    tables = {table.caption: table.frame for table in massive.iter_tables()}
    first_two = ["Per kind (top dimensions of every head)", "Top dimensions per head"]
    assert list(tables)[:2] == first_two
    layers = tables["Massive activations of the residual stream per layer (Sun et al.)"]
    assert {"max_abs", "median_abs", "ratio", "n_massive", "first_position_share"} <= set(layers)
    sun = next(c for c in massive.claims if c.claim.startswith("Sun et al."))
    # Random tiny models have no entry above 100: the rule must say so.
    assert (layers.n_massive == 0).all() and sun.verdict == "does not hold"


def test_claim_text_is_escaped_and_verdicts_are_checked():
    claim = Claim("<b>bold</b> claim", "1 < 2", "x & y", "none", "holds")
    page = Report("t").add(Section("S", claims=[claim])).to_html()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt; claim" in page
    assert "1 &lt; 2" in page and "x &amp; y" in page
    assert "&lt;b&gt;bold" in Report("t").add(Section("S", claims=[claim]))._repr_html_()
    with pytest.raises(RopeInterpError, match="Unknown verdict"):
        Claim("c", "1", "t", "u", "probably")


def test_verdict_rules_flip_on_constructed_inputs():
    # 18 of 20 flagged pairs: Wilson 95 % [69.9, 97.2] %.
    assert wilson_interval(18, 20) == pytest.approx((0.6990, 0.9721), abs=1e-4)
    assert share_verdict(18, 20, base=0.6) == "holds"  # the lower end exceeds the base rate
    assert share_verdict(18, 20, base=0.75) == "inconclusive"
    assert share_verdict(2, 20, base=0.75) == "does not hold"
    assert share_verdict(0, 0, base=0.5) == "not tested here"
    assert interval_verdict(0.01, 0.2) == "holds" and interval_verdict(-0.01, 0.2) == "inconclusive"
    assert interval_verdict(-0.2, -0.01) == "does not hold"
    assert correlation_verdict(0.7, 0.001) == "holds" and correlation_verdict(0.7, 0.2) == (
        "no evidence"
    )
    assert correlation_verdict(-0.7, 0.001) == "does not hold"
    assert enrichment_verdict(0.94, 0.943, 0.73) == "no evidence"
    assert enrichment_verdict(0.99, 0.90, 0.001) == "holds"
    assert count_verdict(3, 3) == "holds" and count_verdict(1, 3) == "partly"
    assert count_verdict(0, 3) == "does not hold"
    # band vs random controls: the sign from the paired CI, "holds" only beyond every control
    assert contrast_and_controls_verdict(0.1, 0.3, beyond_controls=True) == "holds"
    assert contrast_and_controls_verdict(0.1, 0.3, beyond_controls=False) == "partly"
    assert contrast_and_controls_verdict(-0.01, 0.3, beyond_controls=True) == "inconclusive"
    assert contrast_and_controls_verdict(-0.3, -0.1, beyond_controls=False) == "does not hold"


def test_outlier_claims_flip_with_the_base_rate():
    # 10 flagged entries, all partial-cycle; the base rate over all entries decides.
    def table(n_partial_unflagged: int, n_other: int) -> pd.DataFrame:
        flagged = [True] * 10 + [False] * (n_partial_unflagged + n_other)
        partial = [True] * (10 + n_partial_unflagged) + [False] * n_other
        return pd.DataFrame(
            {
                "flagged": flagged,
                "theta": [0.01 if p else 1.0 for p in partial],
                "partial_cycle": partial,
                "frequency_bound": partial,
                "angle_bound": partial,
            }
        )

    rare = outlier_claims({3.5: table(0, 90)}, context=64)[0]  # base rate 10 %
    common = outlier_claims({3.5: table(85, 5)}, context=64)[0]  # base rate 95 %
    assert rare.verdict == "holds" and "10 of 10" in rare.number
    assert common.verdict == "inconclusive"  # Wilson [72.2, 100] % reaches below 95 %


def test_build_report_takes_one_settings_object(monkeypatch):
    """The older keywords still work (with a warning), never together with `settings`; the
    model and run-time lines are written here, counting from `started` when given."""
    import time

    from rope_interp.interventions import experiment

    monkeypatch.setattr(experiment, "_WARNED", set())
    model = make_model("gqa")
    corpus = Corpus("random tokens", random_tokens(model, batch=2, pos=16), prepend_bos=False)
    with pytest.warns(DeprecationWarning, match="build_report"):
        old = build_report(model, corpus, sections=["geometry"], progress=False, seed=7)
    assert old.meta["seed"] == "7"
    with pytest.raises(RopeInterpError, match="not both"):
        build_report(model, corpus, sections=["geometry"], settings=RunSettings(), seed=7)
    with pytest.raises(TypeError, match="n_boot"):  # the report's keyword was n_bootstrap
        build_report(model, corpus, sections=["geometry"], n_boot=5)
    report = build_report(
        model,
        corpus,
        sections=["geometry"],
        settings=RunSettings(progress=False),
        model_name="my-model",
        started=time.perf_counter() - 100,
    )
    line = report.meta["model"]
    assert line.startswith(f"my-model as a {type(model).__name__} ({model.cfg.n_layers} layers")
    assert list(report.meta)[0] == "model"  # first, as the command has always shown it
    seconds, rest = report.meta["run time"].split(" ", 1)
    assert int(seconds) >= 100 and rest == "s in all (model loading included)"
    assert old.meta["run time"].endswith("s (analyses and ablations, model loading excluded)")
