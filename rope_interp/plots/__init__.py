"""Plotly figures drawn from rope-interp's tidy tables (figures are returned, never shown)."""
