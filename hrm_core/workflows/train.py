"""``train(config)``, as the seed calls it: the data plane in an in-memory warehouse (no Dagster),
then the curriculum trainer on one walk-forward fold."""

from __future__ import annotations

from pathlib import Path

import duckdb

from hrm_core.core.config import HRMConfig
from hrm_core.core.feature_registry import model_columns
from hrm_core.data.sources import make_source
from hrm_core.data.validation import validate_ohlcv
from hrm_core.data.warehouse import ensure_tables, replace_symbols, transaction
from hrm_core.dataset.market import MarketData, concat, load_market_data
from hrm_core.dataset.scenarios import scarce_tasks, synthetic_task_data
from hrm_core.features.build import build_features
from hrm_core.features.labels import build_labels
from hrm_core.features.splits import build_splits
from hrm_core.training.trainer import TrainResult, fit


def prepare_warehouse(config: HRMConfig, con: duckdb.DuckDBPyConnection) -> None:
    """Load, validate, featurise, label and split the configured source into ``con``."""
    report = validate_ohlcv(make_source(config.data).load(), config.validation)
    ensure_tables(con)
    symbols = sorted(report.symbols)
    with transaction(con):
        replace_symbols(con, "clean.ohlcv", report.clean, symbols)
    build_features(con)
    build_labels(con, config.labels)
    hf = config.hierarchical_features
    columns, warmup = model_columns(hf.strategic_indicators, hf.tactical_indicators, hf.high_level_lookback)
    build_splits(con, config.splits, config.embargo_bars, columns, warmup)


def prepare_market_data(config: HRMConfig) -> MarketData:
    """The configured source as training data for fold ``training.fold``, with scenario symbols
    appended for the tasks it has too few training chunks of. Its test part runs from the fold's
    test start to the end of the data (what a backtest of this fold's model may trade)."""
    con = duckdb.connect()
    prepare_warehouse(config, con)
    data = load_market_data(con, config, config.training.fold, test_to_end=True)
    return with_scenarios(data, config)


def with_scenarios(data: MarketData, config: HRMConfig) -> MarketData:
    """``data`` plus synthetic scenario symbols for its scarce tasks (unchanged when none is)."""
    scarce = scarce_tasks(data, config)
    return concat([data, synthetic_task_data(scarce, config, data, config.seed)]) if scarce else data


def train(
    config: HRMConfig,
    data: MarketData | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the HRM through the configured curriculum (in ``training.processes`` processes);
    returns the model and its history."""
    data = prepare_market_data(config) if data is None else data
    return fit(config, data, checkpoint_dir=checkpoint_dir, progress=progress)
