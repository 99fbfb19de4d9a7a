"""Backtests over the test bars (from a fold's test part to the end of the data): the HRM agent
(or any policy) trading each symbol bar by bar through ``TradingEnv``, the baselines on the same
bars, per symbol and as an equal-weight portfolio, every number out of sample and net of costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hrm_core.config import HRMConfig, StageConfig
from hrm_core.data.market import MarketData
from hrm_core.errors import DataError
from hrm_core.model.exposure import action_of, band_path, benchmark_exposure
from hrm_core.model.trader import TraderBase
from hrm_core.sim.baselines import BASELINES
from hrm_core.sim.decisions import SHARES, exit_levels, ledger_frame, run_decisions
from hrm_core.sim.env import TradingEnv
from hrm_core.sim.hrm_env import HRMTradingEnv
from hrm_core.sim.metrics import performance_summary, sharpe_ratio
from hrm_core.sim.report import write_report
from hrm_core.training.api import prepare_market_data, train
from hrm_core.training.targets import outcome_targets
from hrm_core.vocabulary import BUY_LONG, HOLD, REGIMES

MODEL_BASELINES = ("flat", "gru")
BENCHMARK = "benchmark"
ROUNDING_TRACKING_ERROR = 1e-6
"""A tracking error (annualised) below this is float rounding between two runs of the same
positions (a gated model's float32 targets against the benchmark's float64 ones), not a bet: its
active Sharpe is 0, not the ratio of two rounding errors (which read ±0.4–0.6 on the sample)."""
BUY_AND_HOLD_WITH_EXITS = "buy_and_hold_exit_rules"

TRADE_COLUMNS = [
    "entry_time",
    "exit_time",
    "bars",
    "shares",
    "entry_price",
    "exit_price",
    "fees",
    "pnl",
    "exit",
]


@dataclass
class SymbolRun:
    """One strategy on one symbol: returns per bar (indexed by timestamp) and what it did."""

    returns: pd.Series
    positions: pd.Series  # shares held after each bar
    exposure: pd.Series  # position value / equity at each close (+ long, − short)
    trades: pd.DataFrame  # TRADE_COLUMNS
    costs: float  # fees and slippage paid
    segments: pd.Series | None = None  # ACT segments per decision (models only)
    regimes: pd.DataFrame | None = None  # regime probabilities per decision (models only)
    brier: float = float("nan")  # p_up's Brier score against the realised outcome (models only)


@dataclass
class BacktestResult:
    """Every strategy's runs per symbol, and their summaries (per symbol and portfolio)."""

    runs: dict[str, dict[str, SymbolRun]]  # strategy -> symbol -> run
    periods_per_year: float
    initial_capital: float
    close: dict[str, pd.Series] = field(default_factory=dict)  # symbol -> close over the test bars

    def period(self) -> str:
        """The first and last test bar over all symbols, e.g. ``2011-01-03 → 2018-12-31``."""
        index = pd.concat(list(self.close.values())).index
        return f"{index.min():%Y-%m-%d} → {index.max():%Y-%m-%d}"

    def portfolio_returns(self, strategy: str) -> pd.Series:
        """Equal-weight portfolio: the mean of the symbols' returns on each bar."""
        frame = pd.concat({s: r.returns for s, r in self.runs[strategy].items()}, axis=1)
        return frame.mean(axis=1, skipna=True)

    def position_stats(self, strategy: str) -> dict[str, float]:
        """Time in the market, mean |exposure| and turnover (mean |Δexposure| a bar), computed per
        symbol and then averaged, so opposite trades of two symbols do not cancel."""
        runs = [run.exposure.to_numpy() for run in self.runs[strategy].values()]
        return {
            "exposure": float(np.mean([(e != 0).mean() for e in runs])),
            "mean_abs_exposure": float(np.mean([np.abs(e).mean() for e in runs])),
            "turnover": float(np.mean([np.abs(np.diff(e, prepend=0.0)).mean() for e in runs])),
        }

    def active_stats(self, strategy: str) -> dict[str, float]:
        """The portfolio's return less the benchmark policy's on the same bars: annualised mean
        (active return), deviation (tracking error) and their ratio (active Sharpe)."""
        active = (self.portfolio_returns(strategy) - self.portfolio_returns(BENCHMARK)).to_numpy()
        periods = self.periods_per_year
        deviation = float(active.std(ddof=1)) if active.size > 1 else 0.0
        tracking_error = deviation * float(np.sqrt(periods))
        return {
            "active_return": float(active.mean() * periods),
            "tracking_error": tracking_error,
            "active_sharpe": float(active.mean() / deviation * np.sqrt(periods))
            if tracking_error > ROUNDING_TRACKING_ERROR
            else 0.0,
        }

    def summary(self) -> pd.DataFrame:
        """One row per strategy: ``performance_summary`` of the equal-weight portfolio, with the
        trades of every symbol, exposure and turnover per symbol then averaged, costs as a share of
        the starting capital, the active return and Sharpe against the benchmark policy, and the
        DSR against every strategy compared here as the trials."""
        returns = {strategy: self.portfolio_returns(strategy).to_numpy() for strategy in self.runs}
        trials = [sharpe_ratio(r) for r in returns.values()]
        trials = [t for t in trials if np.isfinite(t)]
        rows = {}
        for strategy, runs in self.runs.items():
            trades = [
                {"pnl": t.pnl, "bars": t.bars} for run in runs.values() for t in run.trades.itertuples()
            ]
            rows[strategy] = (
                performance_summary(
                    returns[strategy],
                    periods_per_year=self.periods_per_year,
                    trades=trades,
                    costs=sum(run.costs for run in runs.values()) / (len(runs) * self.initial_capital),
                    trials_sharpe=trials if len(trials) > 1 else None,
                )
                | self.position_stats(strategy)
                | self.active_stats(strategy)
                | {"brier": float(np.mean([run.brier for run in runs.values()]))}
            )
        return pd.DataFrame(rows).T


@torch.no_grad()
def run_agent(
    model: TraderBase,
    data: MarketData,
    config: HRMConfig,
    symbol: str,
    part: str,
    act: bool,
    up: np.ndarray,
) -> SymbolRun:
    """The model trading ``symbol`` through ``part`` in ``HRMTradingEnv`` (real fills and costs);
    ``up`` [N] is the realised outcome its p_up is scored against (``outcome_targets``)."""
    env = HRMTradingEnv(data, config, model, symbol=symbol, part=part, act=act)
    _, info = env.reset(seed=config.seed)
    equity, shares, used, regimes, p_up, trades = [info["equity"]], [info["shares"]], [], [], [], []
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step()
        equity.append(info["equity"])
        shares.append(info["shares"])
        used.append(info["segments"])
        regimes.append(info["regime_probs"])
        p_up.append(info["p_up"])
        if "closed_trade" in info:
            trades.append(info["closed_trade"])
    if (still_open := env.open_trade()) is not None:
        trades.append(still_open)
    index = pd.DatetimeIndex(data.ts[env.rows])
    equity = pd.Series(equity, index=index)
    positions = pd.Series(shares, index=index)
    realised = up[env.rows[:-1]]
    known = np.isfinite(realised)
    brier = float(np.mean((np.array(p_up)[known] - realised[known]) ** 2)) if known.any() else float("nan")
    return SymbolRun(
        returns=equity.pct_change().iloc[1:],
        positions=positions,
        exposure=positions * data.close[env.rows] / equity,
        trades=_timed(ledger_frame(trades), data.ts),
        costs=env.costs,
        segments=pd.Series(used, index=index[:-1]),
        regimes=pd.DataFrame(regimes, index=index[:-1], columns=list(REGIMES)),
        brier=brier,
    )


def run_baseline(name: str, data: MarketData, config: HRMConfig, symbol: str, part: str) -> SymbolRun:
    """A rule baseline (``BASELINES``) on the same decision bars as the models."""
    history = np.flatnonzero(data.symbol_id == data.symbols.index(symbol))
    exposure = BASELINES[name](pd.Series(data.close[history]), config.trading.periods_per_year).to_numpy()
    return run_targets(exposure, data, config, symbol, part)


def run_benchmark(data: MarketData, config: HRMConfig, symbol: str, part: str) -> SymbolRun:
    """The policy's benchmark (``policy.benchmark``): what an untrained or gated-off model trades."""
    history = np.flatnonzero(data.symbol_id == data.symbols.index(symbol))
    exposure = benchmark_exposure(data.close[history], data.symbol_id[history], config.policy, config.trading)
    return run_targets(exposure, data, config, symbol, part)


def run_targets(
    exposure: np.ndarray, data: MarketData, config: HRMConfig, symbol: str, part: str
) -> SymbolRun:
    """Target exposures decided over ``symbol``'s whole history (so a rule's look-back is warm at
    the first test bar), traded inside the part only, through the configured no-trade band and the
    same engine, fills and costs (borrow included) as the models."""
    rows = TradingEnv(data, config, symbol=symbol, part=part).rows
    first = np.flatnonzero(data.symbol_id == data.symbols.index(symbol))[0]
    limit = config.trading.max_position_size
    target = np.clip(exposure[rows[0] - first : rows[-1] - first + 1], -limit, limit)
    position = band_path(target, config.trading.no_trade_band)
    held = np.concatenate([[0.0], position[:-1]])
    decisions = pd.DataFrame(
        {
            "action": action_of(position, held),
            "quantity": np.abs(position),
            "stop_loss": 0.0,
            "take_profit": 0.0,
        }
    )
    return _engine_run(data, config, rows, decisions)


def run_buy_and_hold_with_exits(data: MarketData, config: HRMConfig, symbol: str, part: str) -> SymbolRun:
    """Buy whenever flat, under the configured stop and target rules (``exit_rules: atr``), so a
    model's stops are compared with the same stops on the market itself."""
    env = TradingEnv(data, config, symbol=symbol, part=part)
    env.reset(seed=config.seed)
    stop, target = exit_levels(config.trading)
    size = config.trading.max_position_size
    actions = []
    terminated = False
    while not terminated:
        action = HOLD if env.state[SHARES] != 0 else BUY_LONG
        actions.append(action)
        *_, terminated, _, _ = env.step(
            {"action_type": action, "quantity": [size], "stop_loss": [stop], "take_profit": [target]}
        )
    actions.append(HOLD)  # the last bar decides nothing
    decisions = pd.DataFrame({"action": actions, "quantity": size, "stop_loss": stop, "take_profit": target})
    return _engine_run(data, config, env.rows, decisions)


def _engine_run(data: MarketData, config: HRMConfig, rows: np.ndarray, decisions: pd.DataFrame) -> SymbolRun:
    bars = pd.DataFrame(
        {
            "open": data.open[rows],
            "high": data.high[rows],
            "low": data.low[rows],
            "close": data.close[rows],
            "atr": np.nan_to_num(data.atr[rows]),
        }
    )
    result = run_decisions(bars, decisions, config.trading)
    index = pd.DatetimeIndex(data.ts[rows])
    ledger = result.trades.assign(
        entry_bar=rows[result.trades["entry_bar"]], exit_bar=rows[result.trades["exit_bar"]]
    )
    equity = pd.Series(result.equity.to_numpy(), index=index)
    return SymbolRun(
        returns=equity.pct_change().iloc[1:],
        positions=pd.Series(result.position.to_numpy(), index=index),
        exposure=pd.Series(
            result.position.to_numpy() * bars["close"].to_numpy() / equity.to_numpy(), index=index
        ),
        trades=_timed(ledger, data.ts),
        costs=result.costs,
    )


def backtest_models(
    models: dict[str, TraderBase],
    data: MarketData,
    config: HRMConfig,
    part: str = "test",
    act: bool = True,
    rules: bool = True,
) -> BacktestResult:
    """Each model (HRM and model baselines) and, with ``rules``, every rule baseline on every symbol
    of ``part``."""
    for name, model in models.items():
        check_features(name, model, data)
    symbols = [s for i, s in enumerate(data.symbols) if len(_rows(data, config, i, part)) >= 2]
    if not symbols:
        raise DataError(
            f"backtest of fold {config.training.fold}",
            f"the {part!r} part has no symbol with at least 2 decision bars",
            "use more data, fewer folds (splits.n_folds) or a larger splits.test_fraction",
        )
    up = outcome_targets(data, config.training.outcome_horizon, config.trading.periods_per_year).up
    runs = {
        name: {s: run_agent(m, data, config, s, part, act, up) for s in symbols} for name, m in models.items()
    }
    runs[BENCHMARK] = {s: run_benchmark(data, config, s, part) for s in symbols}
    for name in BASELINES if rules else ():
        runs[name] = {s: run_baseline(name, data, config, s, part) for s in symbols}
    if rules and config.trading.exit_rules != "none":
        runs[BUY_AND_HOLD_WITH_EXITS] = {
            s: run_buy_and_hold_with_exits(data, config, s, part) for s in symbols
        }
    close = {}
    for symbol in symbols:
        rows = _rows(data, config, data.symbols.index(symbol), part)
        close[symbol] = pd.Series(data.close[rows], index=pd.DatetimeIndex(data.ts[rows]))
    return BacktestResult(
        runs=runs,
        periods_per_year=config.trading.periods_per_year,
        initial_capital=config.trading.initial_capital,
        close=close,
    )


def check_features(name: str, model: TraderBase, data: MarketData) -> None:
    """A model reads its features by position, so data with other features (or another order)
    must be refused before it trades."""
    expected = model.feature_names
    found = (data.strategic_names, data.tactical_names)
    if expected is not None and tuple(map(tuple, expected)) != found:
        raise DataError(
            f"backtest model {name!r}",
            f"it was trained on strategic {list(expected[0])} and tactical {list(expected[1])} "
            f"features, but the data has {list(found[0])} and {list(found[1])}",
            "set hierarchical_features to the indicators the model was trained with",
        )
    widths = (model.n_strategic, model.n_tactical)
    if widths != (len(found[0]), len(found[1])):
        raise DataError(
            f"backtest model {name!r}",
            f"it reads {widths[0]} strategic and {widths[1]} tactical features, but the data has "
            f"{len(found[0])} and {len(found[1])}",
            "set hierarchical_features to the indicators the model was trained with",
        )


def baseline_config(config: HRMConfig, architecture: str) -> HRMConfig:
    """The config that trains a model baseline like the HRM: same data, loss and episode budget,
    in one stage (no cycles to grow) with one segment (its passes would all be equal)."""
    episodes = sum(stage.episodes for stage in config.training.curriculum)
    stage = StageConfig(name=architecture, H_cycles=1, L_cycles=1, episodes=episodes)
    return config.model_copy(
        update={
            "model": config.model.model_copy(update={"architecture": architecture}),
            "training": config.training.model_copy(
                update={"curriculum": [stage], "deep_supervision_segments": 1}
            ),
        }
    )


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


def _rows(data: MarketData, config: HRMConfig, symbol_id: int, part: str) -> np.ndarray:
    rows = data.decision_rows(part, config.hierarchical_features.high_level_lookback)
    return rows[data.symbol_id[rows] == symbol_id]


def _timed(ledger: pd.DataFrame, ts: np.ndarray) -> pd.DataFrame:
    """A ledger with data rows replaced by times and a duration in bars."""
    entry, exit_ = ledger["entry_bar"].to_numpy(int), ledger["exit_bar"].to_numpy(int)
    ledger = ledger.assign(
        entry_time=pd.DatetimeIndex(ts[entry]), exit_time=pd.DatetimeIndex(ts[exit_]), bars=exit_ - entry + 1
    )
    return ledger[TRADE_COLUMNS].reset_index(drop=True)
