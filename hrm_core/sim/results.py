"""What a backtest returns: every strategy's run per symbol, and the portfolio summaries and
active statistics against the benchmark that reports, evaluations and promotion read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hrm_core.sim.metrics import performance_summary, sharpe_ratio

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
