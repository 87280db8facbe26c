"""Figures as PNG/SVG/PDF through kaleido and the system's Chromium (skipped without one)."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from rope_interp.errors import RopeInterpError
from rope_interp.plots.export import check_image_export, find_browser
from rope_interp.report import Report, Section
from tests.helpers import png_size

needs_browser = pytest.mark.skipif(find_browser() is None, reason="Chromium is not installed")


def _report() -> Report:
    line = go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 0, 1]))
    bars = go.Figure(go.Bar(x=["a", "b"], y=[1, 3]))
    return Report(sections=[Section("Usage", figures=[line, bars]), Section("Sinks", figures=[])])


def test_figures_are_named_by_section_in_reading_order():
    assert [name for name, _ in _report().named_figures()] == ["usage-1", "usage-2"]


def test_unknown_format_is_a_clear_error():
    with pytest.raises(RopeInterpError, match="--format takes one of png, svg, pdf"):
        check_image_export("jpeg")


@needs_browser
def test_png_export_writes_real_images_of_the_requested_size(tmp_path):
    paths = _report().write_figures(tmp_path / "fig", "png")
    assert [p.name for p in paths] == ["usage-1.png", "usage-2.png"]
    assert png_size(paths[0]) == (1800, 1120)  # 900×560 CSS pixels at scale 2
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["usage-1.png", "usage-2.png"]


@needs_browser
def test_pdf_export(tmp_path):
    (path, _) = _report().write_figures(tmp_path, "pdf")
    assert path.read_bytes()[:5] == b"%PDF-"
