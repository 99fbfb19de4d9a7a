"""The seed's ``results = backtest(config)``: train the HRM and the model baselines on a fold, then
backtest them beside the rule baselines."""

from __future__ import annotations

from pathlib import Path

from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData
from hrm_core.model.trader import TraderBase
from hrm_core.sim.backtest import MODEL_BASELINES, backtest_models, baseline_config
from hrm_core.sim.report import write_report
from hrm_core.sim.results import BacktestResult
from hrm_core.workflows.train import prepare_market_data, train


def backtest(
    config: HRMConfig,
    model: TraderBase | None = None,
    *,
    data: MarketData | None = None,
    model_baselines: tuple[str, ...] = MODEL_BASELINES,
    report_dir: str | Path | None = None,
    progress: bool = True,
) -> BacktestResult:
    """The seed's ``results = backtest(config)``: fold ``training.fold`` of the configured data,
    the given model (or one trained now through the curriculum) and the flat and GRU baselines
    trained the same way, beside the rule baselines, on the test bars from the fold's test part to
    the end of the data (the test parts of this and every later fold). Writes the report to
    ``report_dir`` when given."""
    data = prepare_market_data(config) if data is None else data
    models = {"hrm": model if model is not None else train(config, data, progress=progress).model}
    for architecture in model_baselines:
        models[architecture] = train(baseline_config(config, architecture), data, progress=progress).model
    result = backtest_models(models, data, config)
    if report_dir is not None:
        write_report(result, report_dir)
    return result
