"""Dagster assets and asset checks, one module per stage. Thin: they call ``hrm_core``."""
