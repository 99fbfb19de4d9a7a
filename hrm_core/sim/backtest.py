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
from hrm_core.errors import DataError
from hrm_core.model.account import ACCOUNT_FEATURES
from hrm_core.model.hrm import HRMTrader
from hrm_core.sim.baselines import BASELINES
from hrm_core.sim.decisions import EXIT_REASONS
from hrm_core.sim.env import TradingEnv
from hrm_core.sim.execution import round_trips, simulate_exposures
from hrm_core.sim.hrm_env import HRMTradingEnv
from hrm_core.sim.metrics import performance_summary, sharpe_ratio
from hrm_core.sim.report import write_report
from hrm_core.training.api import prepare_market_data, train
from hrm_core.training.data import MarketData

MODEL_BASELINES = ("flat", "gru")

ENGINE_TRADE_COLUMNS = ["entry_bar", "exit_bar", "shares", "entry_price", "exit_price", "fees", "exit"]
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

    def summary(self) -> pd.DataFrame:
        """One row per strategy: ``performance_summary`` of the equal-weight portfolio, with the
        trades of every symbol, the mean exposure across symbols, costs as a share of the starting
        capital, and the DSR against every strategy compared here as the trials."""
        returns = {strategy: self.portfolio_returns(strategy).to_numpy() for strategy in self.runs}
        trials = [sharpe_ratio(r) for r in returns.values()]
        trials = [t for t in trials if np.isfinite(t)]
        rows = {}
        for strategy, runs in self.runs.items():
            trades = [
                {"pnl": t.pnl, "bars": t.bars} for run in runs.values() for t in run.trades.itertuples()
            ]
            exposure = pd.concat([run.exposure for run in runs.values()], axis=1).mean(axis=1)
            rows[strategy] = performance_summary(
                returns[strategy],
                periods_per_year=self.periods_per_year,
                trades=trades,
                positions=exposure.to_numpy(),
                costs=sum(run.costs for run in runs.values()) / (len(runs) * self.initial_capital),
                trials_sharpe=trials if len(trials) > 1 else None,
            )
        return pd.DataFrame(rows).T


@torch.no_grad()
def run_agent(
    model: HRMTrader, data: MarketData, config: HRMConfig, symbol: str, part: str, act: bool
) -> SymbolRun:
    """The model trading ``symbol`` through ``part`` in ``HRMTradingEnv`` (real account state,
    real fills, stops and targets)."""
    env = HRMTradingEnv(data, config, model, symbol=symbol, part=part, act=act)
    _, info = env.reset(seed=config.seed)
    equity, shares, used, regimes, trades = [info["equity"]], [info["shares"]], [], [], []
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step()
        equity.append(info["equity"])
        shares.append(info["shares"])
        used.append(info["segments"])
        regimes.append(info["regime_probs"])
        if "closed_trade" in info:
            trades.append(info["closed_trade"])
    if (still_open := env.open_trade()) is not None:
        trades.append(still_open)
    index = pd.DatetimeIndex(data.ts[env.rows])
    ledger = pd.DataFrame(trades, columns=ENGINE_TRADE_COLUMNS)
    ledger["pnl"] = ledger["shares"] * (ledger["exit_price"] - ledger["entry_price"]) - ledger["fees"]
    ledger["exit"] = [EXIT_REASONS[int(x)] for x in ledger["exit"]]
    ledger = _timed(ledger, data.ts, ledger["entry_bar"].astype(int), ledger["exit_bar"].astype(int))
    equity = pd.Series(equity, index=index)
    positions = pd.Series(shares, index=index)
    return SymbolRun(
        returns=equity.pct_change().iloc[1:],
        positions=positions,
        exposure=positions * data.close[env.rows] / equity,
        trades=ledger,
        costs=env.costs,
        segments=pd.Series(used, index=index[:-1]),
        regimes=pd.DataFrame(regimes, index=index[:-1], columns=["trending", "ranging", "volatile"]),
    )


def run_baseline(name: str, data: MarketData, config: HRMConfig, symbol: str, part: str) -> SymbolRun:
    """A baseline's target exposures on the same decision bars, through the same fills and costs.
    The rule sees the symbol's whole history up to each bar, so its look-back is warm at the
    first test bar, but it trades inside the part only."""
    rows = TradingEnv(data, config, symbol=symbol, part=part).rows
    history = np.flatnonzero(data.symbol_id == data.symbols.index(symbol))
    exposure = BASELINES[name](pd.Series(data.close[history]), config.trading.periods_per_year)
    window = slice(rows[0] - history[0], rows[-1] - history[0] + 1)
    bars = pd.DataFrame({"open": data.open[rows], "close": data.close[rows]})
    trading = config.trading
    result = simulate_exposures(
        bars,
        exposure.to_numpy()[window],
        init_cash=trading.initial_capital,
        fees=trading.commission,
        fixed_fees=trading.fixed_fee,
        slippage=trading.slippage,
    )
    fills = result.fills
    quoted = fills["price"] / (1 + np.sign(fills["size"]) * trading.slippage)  # before slippage
    slippage = float((fills["size"].abs() * (fills["price"] - quoted).abs()).sum())
    ledger = round_trips(fills, len(rows) - 1, float(bars["close"].iloc[-1]))
    ts = data.ts[rows]
    index = pd.DatetimeIndex(ts)
    return SymbolRun(
        returns=pd.Series(result.value.to_numpy(), index=index).pct_change().iloc[1:],
        positions=pd.Series(result.position.to_numpy(), index=index),
        exposure=pd.Series((result.position * bars["close"] / result.value).to_numpy(), index=index),
        trades=_timed(ledger, ts, ledger["entry_bar"], ledger["exit_bar"]),
        costs=result.fees_paid + slippage,
    )


def backtest_models(
    models: dict[str, HRMTrader], data: MarketData, config: HRMConfig, part: str = "test", act: bool = True
) -> BacktestResult:
    """Each model (HRM and model baselines) and every rule baseline on every symbol of ``part``."""
    for name, model in models.items():
        check_features(name, model, data)
    symbols = [s for i, s in enumerate(data.symbols) if len(_rows(data, config, i, part)) >= 2]
    if not symbols:
        raise DataError(
            f"backtest of fold {config.training.fold}",
            f"the {part!r} part has no symbol with at least 2 decision bars",
            "use more data, fewer folds (splits.n_folds) or a larger splits.test_fraction",
        )
    runs = {
        name: {s: run_agent(m, data, config, s, part, act) for s in symbols} for name, m in models.items()
    }
    for name in BASELINES:
        runs[name] = {s: run_baseline(name, data, config, s, part) for s in symbols}
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


def check_features(name: str, model: HRMTrader, data: MarketData) -> None:
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
    widths = (model.embed_H.in_features // model.h_pool, model.embed_L.in_features - len(ACCOUNT_FEATURES))
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
    model: HRMTrader | None = None,
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


def _timed(ledger: pd.DataFrame, ts: np.ndarray, entry: pd.Series, exit_: pd.Series) -> pd.DataFrame:
    """A ledger with bar positions replaced by times and a duration in bars."""
    ledger = ledger.assign(
        entry_time=pd.DatetimeIndex(ts[entry.to_numpy(int)]),
        exit_time=pd.DatetimeIndex(ts[exit_.to_numpy(int)]),
        bars=(exit_ - entry).to_numpy(int) + 1,
    )
    return ledger[TRADE_COLUMNS].reset_index(drop=True)
