"""Performance metrics of a return series, with the Probabilistic and Deflated Sharpe Ratios.

Conventions (the same as empyrical-reloaded and quantstats, which the tests check to 1e-9):
returns are simple per-period returns; annualisation multiplies by ``periods_per_year`` (252 for
daily equities, 252 × 6.5 for hourly equities, 365 × 24 for crypto hours); standard deviations
use ddof = 1; CAGR is (1 + total)^(periods_per_year / n) − 1; Sortino's downside deviation is
sqrt(mean(min(r, 0)²)); drawdowns are measured on the wealth curve starting at 1 before the first
return, so a loss on the first bar is a drawdown; win rate counts non-zero periods only; profit
factor is the sum of gains over the absolute sum of losses.

PSR (Bailey & López de Prado 2012): P[true Sharpe > 0] given the per-period Sharpe SR over n
returns with skewness γ3 and kurtosis γ4 (bias-corrected sample estimates, as pandas computes
them): Φ(SR·sqrt(n−1) / sqrt(1 − γ3·SR + (γ4−1)/4·SR²)).
DSR (Bailey & López de Prado 2014): the PSR against the Sharpe expected from the best of N trials
with no skill, SR* = sqrt(V[SR_trials])·((1−γ)·Φ⁻¹(1−1/N) + γ·Φ⁻¹(1−1/(N·e))), γ = 0.5772…;
``trials_sharpe`` are the per-period Sharpe ratios of every trial, this one included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from hrm_core.core.stats import expected_max_sharpe


def performance_summary(
    returns: Sequence[float] | np.ndarray,
    *,
    periods_per_year: float,
    trades: Sequence[dict] | None = None,
    trials_sharpe: Sequence[float] | None = None,
    positions: Sequence[float] | np.ndarray | None = None,
    costs: float | None = None,
) -> dict[str, float]:
    """Metrics of per-period ``returns``; trade statistics given ``trades`` (dicts with ``pnl`` and
    ``bars``); exposure and turnover given ``positions``; DSR given ``trials_sharpe``."""
    r = np.asarray(returns, dtype=float)
    if r.size == 0 or not np.isfinite(r).all():
        raise ValueError("performance_summary: returns must be a non-empty series of finite numbers")
    wealth = np.cumprod(1 + r)
    total = wealth[-1] - 1
    drawdowns = drawdown_series(r)
    max_dd = float(drawdowns.min())
    cagr = (
        float(np.sign(1 + total) * abs(1 + total) ** (periods_per_year / r.size) - 1) if total > -1 else -1.0
    )
    gains, losses = r[r > 0].sum(), r[r < 0].sum()
    summary = {
        "total_return": float(total),
        "cagr": cagr,
        "volatility": float(_std(r) * math.sqrt(periods_per_year)),
        "sharpe": sharpe_ratio(r, periods_per_year),
        "sortino": sortino_ratio(r, periods_per_year),
        "calmar": cagr / abs(max_dd) if max_dd < 0 else math.nan,
        "max_drawdown": max_dd,
        "max_drawdown_duration": float(max_drawdown_duration(drawdowns)),
        "win_rate": float((r > 0).sum() / max(1, (r != 0).sum())),
        "profit_factor": float(gains / abs(losses)) if losses < 0 else math.inf,
        "psr": probabilistic_sharpe_ratio(r),
        "n_periods": float(r.size),
    }
    if trades is not None:
        pnl = np.array([t["pnl"] for t in trades], dtype=float)
        won, lost = pnl[pnl > 0].sum(), pnl[pnl < 0].sum()
        summary |= {
            "n_trades": float(len(pnl)),
            "trade_win_rate": float((pnl > 0).mean()) if len(pnl) else math.nan,
            "trade_profit_factor": float(won / abs(lost)) if lost < 0 else math.inf,
            "avg_trade_duration": float(np.mean([t["bars"] for t in trades])) if len(pnl) else math.nan,
        }
    if positions is not None:
        p = np.asarray(positions, dtype=float)
        summary["exposure"] = float((p != 0).mean())
        summary["turnover"] = float(np.abs(np.diff(p, prepend=0.0)).mean())
    if costs is not None:
        summary["costs"] = float(costs)
    if trials_sharpe is not None:
        summary["dsr"] = deflated_sharpe_ratio(r, trials_sharpe)
    return summary


def _std(r: np.ndarray) -> float:
    return float(r.std(ddof=1)) if r.size > 1 else math.nan


def sharpe_ratio(r: np.ndarray, periods_per_year: float = 1.0) -> float:
    """Mean over standard deviation (ddof 1), times sqrt(periods_per_year)."""
    std = _std(r)
    return float(r.mean() / std * math.sqrt(periods_per_year)) if std > 0 else math.nan


def sortino_ratio(r: np.ndarray, periods_per_year: float) -> float:
    downside = math.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    return float(r.mean() / downside * math.sqrt(periods_per_year)) if downside > 0 else math.inf


def drawdown_series(r: np.ndarray) -> np.ndarray:
    """Drawdown after each period from the running peak of wealth (starting at 1)."""
    wealth = np.cumprod(1 + r)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    return wealth / peak - 1


def max_drawdown_duration(drawdowns: np.ndarray) -> int:
    """Longest run of consecutive periods under water (drawdown < 0)."""
    longest = current = 0
    for under in drawdowns < 0:
        current = current + 1 if under else 0
        longest = max(longest, current)
    return longest


def probabilistic_sharpe_ratio(r: np.ndarray, benchmark_sharpe: float = 0.0) -> float:
    """P[true per-period Sharpe > ``benchmark_sharpe``] (PSR)."""
    n = r.size
    sr = sharpe_ratio(r)
    if n < 3 or not math.isfinite(sr):
        return math.nan
    skew = float(stats.skew(r, bias=False))
    kurt = float(stats.kurtosis(r, fisher=True, bias=False)) + 3
    denominator = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    if denominator <= 0:
        return math.nan
    return float(stats.norm.cdf((sr - benchmark_sharpe) * math.sqrt(n - 1) / math.sqrt(denominator)))


def deflated_sharpe_ratio(r: np.ndarray, trials_sharpe: Sequence[float]) -> float:
    """PSR against the best Sharpe expected from ``len(trials_sharpe)`` skill-less trials (DSR)."""
    return probabilistic_sharpe_ratio(r, expected_max_sharpe(trials_sharpe))


PERCENT_METRICS = ("total_return", "cagr", "max_drawdown", "trade_win_rate", "exposure", "costs")
INTEGER_METRICS = ("n_trades",)


def format_metric(name: str, value: float | None) -> str:
    """One metric as people read it: percentages as percentages, counts as integers, ratios with
    two or three decimals, and every undefined value (NaN, ±inf, missing) as ``n/a``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if name in PERCENT_METRICS:
        return f"{value:.1%}"
    if name in INTEGER_METRICS:
        return f"{value:.0f}"
    return f"{value:.3f}" if name in ("turnover", "brier") else f"{value:.2f}"
