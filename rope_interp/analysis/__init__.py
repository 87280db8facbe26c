"""Analyses that test published claims about RoPE; one module per claim family."""
