"""Sharpe-ratio statistics shared by training (checkpoint selection and the tilt's deployment
gate) and simulation (reports, DSR): one definition of each.

- ``sharpe_standard_error``: Lo (2002), the standard error of a per-period Sharpe ratio SR
  estimated from n i.i.d. returns, sqrt((1 + SR²/2) / n).
- ``t_interval``: the mean of independent units (folds, seeds) and its 95 % Student-t interval.
- ``expected_max_sharpe``: the Sharpe expected from the best of N skill-less trials (Bailey and
  López de Prado 2014), sqrt(V[SR_trials])·((1−γ)·Φ⁻¹(1−1/N) + γ·Φ⁻¹(1−1/(N·e))), γ = 0.5772…;
  it uses the trials' own dispersion, so highly correlated trials (checkpoints of one run) deflate
  little and independent ones a lot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329


def sharpe_standard_error(sharpe: float, n: int) -> float:
    """Lo's (2002) standard error of a per-period Sharpe ratio over ``n`` returns."""
    return math.sqrt((1 + sharpe**2 / 2) / n) if n > 0 else math.inf


def t_interval(units: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % Student-t interval of the mean of independent ``units``; no
    interval (NaN bounds) from fewer than two."""
    values = np.asarray(units, dtype=float)
    mean = float(values.mean()) if values.size else math.nan
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half


def expected_max_sharpe(trials_sharpe: Sequence[float]) -> float:
    """The best per-period Sharpe expected among ``trials_sharpe``'s count of skill-less trials."""
    trials = np.asarray([t for t in trials_sharpe if math.isfinite(t)], dtype=float)
    n = trials.size
    if n < 2:
        return 0.0
    return math.sqrt(trials.var(ddof=1)) * (
        (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e))
    )
