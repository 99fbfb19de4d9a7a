"""Outcome targets read off the realised path after each decision, for the heads that describe the
market rather than trade it (``model/heads.py``). Labels may look ahead; features never do.

Over the ``horizon`` open-to-open returns after the decision's fill (the returns of bars
t+1..t+horizon+1's opens):
- ``up``: their sum is positive;
- ``log_volatility``: log of their annualised standard deviation;
- ``regime``: *volatile* when that volatility is in the top quarter of the training rows',
  else *trending* when the efficiency ratio |Σ r| / Σ |r| is above the training rows' median
  among the non-volatile ones, else *ranging*. Thresholds come from the training part only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hrm_core.core.vocabulary import PARTS, REGIMES
from hrm_core.dataset.market import MarketData

VOLATILE_QUANTILE = 0.75


@dataclass
class OutcomeTargets:
    up: np.ndarray  # [N] 1.0 / 0.0, NaN where the horizon leaves the symbol's data
    log_volatility: np.ndarray  # [N] NaN where unknown
    regime: np.ndarray  # [N] index into REGIMES, -1 where unknown


def outcome_targets(data: MarketData, horizon: int, periods_per_year: float) -> OutcomeTargets:
    n = len(data)
    returns = np.log1p(data.next_returns())  # NaN where the next fill leaves the symbol
    padded = np.concatenate([returns, np.full(horizon, np.nan)])
    window = np.lib.stride_tricks.sliding_window_view(padded, horizon)[:n]  # [N, horizon]
    total = window.sum(axis=1)
    volatility = window.std(axis=1, ddof=1) * np.sqrt(periods_per_year)
    efficiency = np.abs(total) / np.maximum(np.abs(window).sum(axis=1), 1e-12)
    known = np.isfinite(total)
    up = np.where(known, (total > 0).astype(float), np.nan)
    log_volatility = np.where(known, np.log(np.maximum(volatility, 1e-6)), np.nan)

    train = known & (data.part == PARTS.index("train"))
    reference = train if train.sum() >= 10 else known
    regime = np.full(n, -1, dtype=np.int64)
    if reference.sum() >= 10:
        volatile_at = np.quantile(volatility[reference], VOLATILE_QUANTILE)
        calm = reference & (volatility <= volatile_at)
        trending_at = np.median(efficiency[calm]) if calm.any() else np.inf
        regime[known] = REGIMES.index("ranging")
        regime[known & (efficiency > trending_at)] = REGIMES.index("trending")
        regime[known & (volatility > volatile_at)] = REGIMES.index("volatile")
    return OutcomeTargets(up=up, log_volatility=log_volatility, regime=regime)
