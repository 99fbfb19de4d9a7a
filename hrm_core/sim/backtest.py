"""Backtests over a fold's test part: the HRM agent (or any policy) trading each symbol bar by bar
through ``TradingEnv``, the baselines on the same bars, per symbol and as an equal-weight
portfolio, every number out of sample and net of costs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from hrm_core.config import HRMConfig
from hrm_core.model.agent import HRMTradingAgent
from hrm_core.model.hrm import HRMTrader, MarketInputs
from hrm_core.sim.baselines import BASELINES
from hrm_core.sim.env import TradingEnv
from hrm_core.sim.execution import simulate_exposures
from hrm_core.sim.metrics import performance_summary
from hrm_core.training.data import MarketData

TRADE_COLUMNS = ["entry_bar", "exit_bar", "shares", "entry_price", "exit_price", "fees", "exit"]
EXITS = ("", "signal", "stop", "target", "end")


@dataclass
class SymbolRun:
    """One strategy on one symbol: returns per bar (indexed by timestamp) and what it did."""

    returns: pd.Series
    positions: pd.Series  # shares held after each bar
    trades: pd.DataFrame = field(default_factory=pd.DataFrame)
    segments: pd.Series | None = None  # ACT segments per decision (the HRM only)
    regimes: pd.DataFrame | None = None  # regime probabilities per decision (the HRM only)


@dataclass
class BacktestResult:
    """Every strategy's runs per symbol, and their summaries (per symbol and portfolio)."""

    runs: dict[str, dict[str, SymbolRun]]  # strategy -> symbol -> run
    periods_per_year: float

    def portfolio_returns(self, strategy: str) -> pd.Series:
        """Equal-weight portfolio: the mean of the symbols' returns on each bar."""
        frame = pd.concat({s: r.returns for s, r in self.runs[strategy].items()}, axis=1)
        return frame.mean(axis=1, skipna=True)

    def summary(self) -> pd.DataFrame:
        """One row per strategy: ``performance_summary`` of the equal-weight portfolio."""
        rows = {}
        for strategy, runs in self.runs.items():
            trades = [
                {"pnl": t.pnl, "bars": t.exit_bar - t.entry_bar + 1}
                for run in runs.values()
                for t in run.trades.itertuples()
            ]
            rows[strategy] = performance_summary(
                self.portfolio_returns(strategy).to_numpy(),
                periods_per_year=self.periods_per_year,
                trades=trades,
            )
        return pd.DataFrame(rows).T


@torch.no_grad()
def run_agent(
    model: HRMTrader, data: MarketData, config: HRMConfig, symbol: str, part: str, act: bool
) -> SymbolRun:
    """The streaming agent trading ``symbol`` through ``part`` (real account state, real fills)."""
    model.eval()
    env = TradingEnv(data, config, symbol=symbol, part=part)
    segments = config.model.halt_max_steps if act else config.training.deep_supervision_segments
    agent = HRMTradingAgent(model, segments, act, config.model.h_update_interval)
    device = next(model.parameters()).device
    obs, info = env.reset(seed=config.seed)
    equity, shares, used, regimes, trades = [info["equity"]], [info["shares"]], [], [], []
    terminated = False
    while not terminated:
        inputs = MarketInputs(
            strategic=torch.as_tensor(obs["strategic"], device=device)[None],
            tactical=torch.as_tensor(obs["tactical"], device=device)[None],
            account=torch.as_tensor(obs["account"], device=device)[None],
            position=torch.sign(torch.tensor([info["shares"]], device=device)),
        )
        decision = agent.decide(inputs)
        out = decision.outputs
        action = {
            "action_type": int(decision.action_index[0]),
            "quantity": out.quantity.cpu().numpy().astype(np.float32),
            "stop_loss": out.stop_loss.cpu().numpy().astype(np.float32),
            "take_profit": out.take_profit.cpu().numpy().astype(np.float32),
        }
        obs, _, terminated, _, info = env.step(action)
        equity.append(info["equity"])
        shares.append(info["shares"])
        used.append(int(decision.segments[0]))
        regimes.append(out.regime_probs[0].cpu().numpy())
        if "closed_trade" in info:
            trades.append(info["closed_trade"])
    index = pd.DatetimeIndex(data.ts[env.rows])
    returns = pd.Series(equity, index=index).pct_change().iloc[1:]
    ledger = pd.DataFrame(trades, columns=TRADE_COLUMNS)
    ledger["pnl"] = ledger["shares"] * (ledger["exit_price"] - ledger["entry_price"]) - ledger["fees"]
    ledger["exit"] = [EXITS[int(x)] for x in ledger["exit"]]
    return SymbolRun(
        returns=returns,
        positions=pd.Series(shares, index=index),
        trades=ledger,
        segments=pd.Series(used, index=index[:-1]),
        regimes=pd.DataFrame(regimes, index=index[:-1], columns=["trending", "ranging", "volatile"]),
    )


def run_baseline(name: str, data: MarketData, config: HRMConfig, symbol: str, part: str) -> SymbolRun:
    """A baseline's target exposures on the same decision bars, through the same fills and costs."""
    rows = TradingEnv(data, config, symbol=symbol, part=part).rows
    sid = data.symbols.index(symbol)
    history = np.flatnonzero(data.symbol_id == sid)
    close = pd.Series(data.close[history])
    exposure = BASELINES[name](close, config.trading.periods_per_year).to_numpy()
    window = slice(rows[0] - history[0], rows[-1] - history[0] + 1)  # decisions inside the part only
    bars = pd.DataFrame({"open": data.open[rows], "close": data.close[rows]})
    trading = config.trading
    result = simulate_exposures(
        bars,
        exposure[window],
        init_cash=trading.initial_capital,
        fees=trading.commission,
        fixed_fees=trading.fixed_fee,
        slippage=trading.slippage,
    )
    index = pd.DatetimeIndex(data.ts[rows])
    return SymbolRun(
        returns=pd.Series(result.value.to_numpy(), index=index).pct_change().iloc[1:],
        positions=pd.Series(result.position.to_numpy(), index=index),
    )


def backtest_model(
    model: HRMTrader, data: MarketData, config: HRMConfig, part: str = "test", act: bool = True
) -> BacktestResult:
    """The HRM agent and every baseline on every symbol of ``part``."""
    symbols = [s for i, s in enumerate(data.symbols) if len(_rows(data, config, i, part)) >= 2]
    if not symbols:
        raise ValueError(f"backtest: the {part!r} part has no symbol with at least 2 decision rows")
    runs = {"hrm": {s: run_agent(model, data, config, s, part, act) for s in symbols}}
    for name in BASELINES:
        runs[name] = {s: run_baseline(name, data, config, s, part) for s in symbols}
    return BacktestResult(runs=runs, periods_per_year=config.trading.periods_per_year)


def _rows(data: MarketData, config: HRMConfig, symbol_id: int, part: str) -> np.ndarray:
    rows = data.decision_rows(part, config.hierarchical_features.high_level_lookback)
    return rows[data.symbol_id[rows] == symbol_id]
