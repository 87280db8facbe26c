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
from rope_interp.conditions import PHASES, standard_conditions
from rope_interp.data import Corpus
from rope_interp.errors import RopeInterpError
from rope_interp.report import (
    SECTION_BUILDERS,
    STANDARD_SECTIONS,
    Report,
    Section,
    build_report,
    resolve_sections,
)
from rope_interp.report import section as register_section
from rope_interp.spec import RotarySpec
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
        model, corpus, Corpus("random tokens", tokens[:2], False), progress=False, n_bootstrap=50
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


def test_a_failing_section_does_not_cost_the_report(monkeypatch, tmp_path):
    def broken(ctx):
        raise ValueError("boom")

    monkeypatch.setitem(SECTION_BUILDERS, "usage", ("Frequency usage", broken))
    model = make_model("half_full")
    corpus = Corpus("random", random_tokens(model, batch=2, pos=16), False)
    report = build_report(model, corpus, sections=["geometry", "usage"], progress=False)
    assert [s.error for s in report.sections] == [None, "ValueError: boom"]
    page = report.to_html()
    assert "Not computed" in page and "boom" in page and "not computed: ValueError" in page


@pytest.mark.parametrize("name", ["interleaved_partial", "ntk_by_parts"])
def test_statistics_sections_on_other_layouts(name):
    model = make_model(name)
    corpus = Corpus("random", random_tokens(model, batch=2, pos=24), False)
    report = build_report(model, corpus, sections=["geometry", "usage", "outliers"], progress=False)
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
        report = build_report(model, corpus, sections=["mine", "geometry"], progress=False)
        assert [s.title for s in report.sections] == ["Rotary geometry", "My section"]
        assert report.sections[1].key_result.endswith("pairs")
    finally:
        SECTION_BUILDERS.pop("mine")
