"""Baseline strategies, as target exposures (fraction of capital, + long / − short) decided at each
bar's close from that bar's information and earlier; the execution model fills them at the next
open like any policy, through the same no-trade band as the models. Reported beside every HRM
result (the flat transformer is the model baseline, ``hrm_core.model.flat``), with the policy's own
benchmark (``policy.benchmark``) as the ``benchmark`` strategy."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hrm_core.core.config import PolicyConfig, TradingConfig
from hrm_core.model.exposure import benchmark_exposure


def buy_and_hold(close: pd.Series) -> pd.Series:
    """Fully long from the first decision."""
    return pd.Series(1.0, index=close.index)


def sma_crossover(close: pd.Series, fast: int = 50, slow: int = 200) -> pd.Series:
    """Long while the fast SMA is above the slow one, flat otherwise (and before the slow SMA exists)."""
    fast_ma, slow_ma = close.rolling(fast).mean(), close.rolling(slow).mean()
    return (fast_ma > slow_ma).astype(float).where(slow_ma.notna(), 0.0)


def time_series_momentum(close: pd.Series, lookback: int = 252) -> pd.Series:
    """Long after a positive ``lookback``-bar return, short after a negative one (Moskowitz et al.)."""
    past = np.sign(close / close.shift(lookback) - 1)
    return past.fillna(0.0)


def volatility_targeted(
    close: pd.Series,
    periods_per_year: float,
    target: float = 0.15,
    window: int = 20,
    max_exposure: float = 1.0,
) -> pd.Series:
    """Long, scaled to ``target`` annualised volatility of the last ``window`` log returns, capped
    (Moreira and Muir): the policy's default benchmark, through its one definition
    (``exposure.benchmark_exposure``)."""
    policy = PolicyConfig(benchmark="volatility_targeted", target_volatility=target, volatility_window=window)
    trading = TradingConfig(max_position_size=max_exposure, periods_per_year=periods_per_year)
    exposure = benchmark_exposure(
        close.to_numpy(float), np.zeros(len(close), dtype=np.int64), policy, trading
    )
    return pd.Series(exposure, index=close.index)


BASELINES = {
    "buy_and_hold": lambda close, periods: buy_and_hold(close),
    "sma_crossover_50_200": lambda close, periods: sma_crossover(close),
    "time_series_momentum": lambda close, periods: time_series_momentum(close),
    "volatility_targeted": lambda close, periods: volatility_targeted(close, periods),
}
"""Name -> f(close, periods_per_year) giving target exposures."""
