"""Backtests over the test bars (from a fold's test part to the end of the data): the HRM agent
(or any policy) trading each symbol bar by bar through ``TradingEnv``, the baselines on the same
bars, per symbol and as an equal-weight portfolio, every number out of sample and net of costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hrm_core.core.config import HRMConfig, StageConfig
from hrm_core.core.errors import DataError
from hrm_core.core.vocabulary import BUY_LONG, HOLD, REGIMES
from hrm_core.dataset.market import MarketData
from hrm_core.dataset.targets import outcome_targets
from hrm_core.engine.decisions import exit_levels, ledger_frame, run_decisions
from hrm_core.engine.env import TradingEnv
from hrm_core.engine.hrm_env import HRMTradingEnv
from hrm_core.model.exposure import action_of, band_path, benchmark_exposure, exposure_cap
from hrm_core.model.serving import OUTPUT_COLUMNS, ServedModel
from hrm_core.model.trader import TraderBase
from hrm_core.sim.baselines import BASELINES
from hrm_core.sim.results import BENCHMARK, BUY_AND_HOLD_WITH_EXITS, TRADE_COLUMNS, BacktestResult, SymbolRun

MODEL_BASELINES = ("flat", "gru")


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


def run_version(model: ServedModel, data: MarketData, config: HRMConfig, symbol: str, part: str) -> SymbolRun:
    """A registered version's served files trading ``symbol`` through ``part`` in ``TradingEnv``:
    the backtest of exactly what paper trading and serving decide with (the kernels' float32
    decisions), for comparing a paper account with it. Each decision reads the exposure the
    previous one chose, or none once the account is flat, as ``HRMTradingEnv`` does."""
    env = TradingEnv(data, config, symbol=symbol, part=part)
    rows = env.rows
    hf = config.hierarchical_features
    raw, steps = model.heads(*data.windows(rows, hf.high_level_lookback, hf.low_level_lookback))
    cap = exposure_cap(data.close[rows], np.nan_to_num(data.atr[rows]), config.trading)
    benchmark = benchmark_exposure(data.close, data.symbol_id, config.policy, config.trading)[rows]
    stop, target = exit_levels(config.trading)
    _, info = env.reset(seed=config.seed)
    equity, shares, trades = [info["equity"]], [info["shares"]], []
    held = np.zeros(1, dtype=np.float32)
    for i in range(len(rows) - 1):
        columns = model.decide_from_heads(
            raw[i : i + 1], steps[i : i + 1], cap[i : i + 1], held, benchmark[i : i + 1]
        )
        decision = dict(zip(OUTPUT_COLUMNS, columns[0], strict=True))
        action = {
            "action_type": int(decision["action"]),
            "quantity": np.array([abs(decision["position"])], dtype=np.float32),
            "stop_loss": np.array([stop], dtype=np.float32),
            "take_profit": np.array([target], dtype=np.float32),
        }
        _, _, _, _, info = env.step(action)
        held = np.array([decision["position"] if env.account["shares"] != 0.0 else 0.0], dtype=np.float32)
        equity.append(info["equity"])
        shares.append(info["shares"])
        if "closed_trade" in info:
            trades.append(info["closed_trade"])
    if (still_open := env.open_trade()) is not None:
        trades.append(still_open)
    index = pd.DatetimeIndex(data.ts[rows])
    equity = pd.Series(equity, index=index)
    positions = pd.Series(shares, index=index)
    return SymbolRun(
        returns=equity.pct_change().iloc[1:],
        positions=positions,
        exposure=positions * data.close[rows] / equity,
        trades=_timed(ledger_frame(trades), data.ts),
        costs=env.costs,
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
    return _engine_run(data, config, rows, target_decisions(target, config.trading.no_trade_band))


def target_decisions(target: np.ndarray, band: float) -> pd.DataFrame:
    """The engine's decisions (``run_decisions``) that follow a path of target exposures through the
    no-trade band, starting flat, with no stops or targets."""
    position = band_path(target, band)
    held = np.concatenate([[0.0], position[:-1]])
    return pd.DataFrame(
        {
            "action": action_of(position, held),
            "quantity": np.abs(position),
            "stop_loss": 0.0,
            "take_profit": 0.0,
        }
    )


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
        action = HOLD if env.account["shares"] != 0 else BUY_LONG
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
