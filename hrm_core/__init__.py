"""HRM Trading library: data, features, model, training and simulation. Never imports Dagster."""

from hrm_core.config import HRMConfig, load_config
from hrm_core.errors import ConfigError, DataError, HRMError
from hrm_core.sim.backtest import backtest
from hrm_core.sim.execution import simulate_orders
from hrm_core.sim.metrics import performance_summary
from hrm_core.training.api import train

__all__ = [
    "ConfigError",
    "DataError",
    "HRMConfig",
    "HRMError",
    "backtest",
    "load_config",
    "performance_summary",
    "simulate_orders",
    "train",
]
