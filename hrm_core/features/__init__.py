"""Hierarchical features and labels computed in DuckDB, the feature registry and walk-forward splits."""
