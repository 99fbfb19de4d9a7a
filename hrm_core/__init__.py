"""HRM Trading library: data, features, model, training and simulation. Never imports Dagster.

The public names are imported on first use (PEP 562), so that importing a light module such as
``hrm_core.core.errors`` does not pay for torch and the backtester (``hrm-trading --help`` stays fast).
"""

from importlib import import_module

_PUBLIC = {
    "ConfigError": "hrm_core.core.errors",
    "DataError": "hrm_core.core.errors",
    "HRMError": "hrm_core.core.errors",
    "HRMConfig": "hrm_core.core.config",
    "load_config": "hrm_core.core.config",
    "backtest": "hrm_core.workflows.backtest",
    "run_decisions": "hrm_core.engine.decisions",
    "performance_summary": "hrm_core.sim.metrics",
    "train": "hrm_core.workflows.train",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hrm_core' has no attribute {name!r}")
    return getattr(import_module(_PUBLIC[name]), name)
