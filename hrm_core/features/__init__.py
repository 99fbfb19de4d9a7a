"""Hierarchical features and labels computed from the warehouse's bars, their quality checks, and
the walk-forward splits."""
