"""performance_summary agrees with empyrical-reloaded and quantstats to 1e-9 and computes PSR/DSR
as Bailey & López de Prado define them."""

import math

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
import quantstats as qs
from scipy import stats

from hrm_core.core.stats import EULER_GAMMA
from hrm_core.sim.metrics import (
    deflated_sharpe_ratio,
    performance_summary,
    probabilistic_sharpe_ratio,
)

PERIODS = {"daily equities": 252, "hourly equities": 252 * 6.5, "crypto hours": 365 * 24}


def series(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = seed % 3
    if kind == 0:
        r = rng.normal(0.0005, 0.01, 800)
    elif kind == 1:
        r = 0.01 * rng.standard_t(3, 1500)  # heavy tails
    else:
        r = rng.normal(-0.0003, 0.02, 300)
        r[0] = -0.05  # a loss on the first bar is a drawdown from the start
    r[rng.random(r.size) < 0.1] = 0.0
    return r


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("periods", PERIODS.values(), ids=PERIODS.keys())
def test_per_period_figures_equal_empyrical_and_quantstats(seed, periods):
    r = series(seed)
    s = pd.Series(r, index=pd.date_range("2020-01-01", periods=r.size, freq="D"))
    got = performance_summary(r, periods_per_year=periods)
    expected = {
        "total_return": [ep.cum_returns_final(r), qs.stats.comp(s)],
        "cagr": [ep.annual_return(r, annualization=periods), qs.stats.cagr(s, periods=periods)],
        "volatility": [
            ep.annual_volatility(r, annualization=periods),
            qs.stats.volatility(s, periods=periods),
        ],
        "sharpe": [ep.sharpe_ratio(r, annualization=periods), qs.stats.sharpe(s, periods=periods)],
        "sortino": [ep.sortino_ratio(r, annualization=periods), qs.stats.sortino(s, periods=periods)],
        "calmar": [ep.calmar_ratio(r, annualization=periods)],
        "max_drawdown": [ep.max_drawdown(r), qs.stats.max_drawdown(s)],
        "win_rate": [qs.stats.win_rate(s)],
        "profit_factor": [qs.stats.profit_factor(s)],
        "psr": [qs.stats.probabilistic_sharpe_ratio(s)],
    }
    for name, references in expected.items():
        for reference in references:
            assert got[name] == pytest.approx(float(reference), rel=1e-9, abs=1e-12), name


def test_drawdown_duration_trades_exposure_and_turnover_by_hand():
    r = np.array([0.1, -0.05, -0.05, 0.02, 0.2, -0.01, 0.0])
    trades = [{"pnl": 50.0, "bars": 3}, {"pnl": -20.0, "bars": 1}, {"pnl": 10.0, "bars": 2}]
    got = performance_summary(
        r, periods_per_year=252, trades=trades, positions=[0, 1, 1, 0, -1, -1, 0], costs=3.5
    )
    assert got["max_drawdown_duration"] == 3  # bars 1, 2, 3 are under the peak of bar 0
    assert got["n_trades"] == 3 and got["trade_win_rate"] == pytest.approx(2 / 3)
    assert got["trade_profit_factor"] == pytest.approx(60 / 20) and got["avg_trade_duration"] == 2
    assert got["exposure"] == pytest.approx(4 / 7)
    assert got["turnover"] == pytest.approx((0 + 1 + 0 + 1 + 1 + 0 + 1) / 7)
    assert got["costs"] == 3.5


def test_psr_follows_its_formula_and_grows_with_evidence():
    r = series(0)
    n, sr = r.size, r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r, bias=False), stats.kurtosis(r, bias=False) + 3
    expected = stats.norm.cdf(sr * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert probabilistic_sharpe_ratio(r) == pytest.approx(expected, rel=1e-12)
    assert probabilistic_sharpe_ratio(np.tile(r, 4)) > probabilistic_sharpe_ratio(r) > 0.5


def test_dsr_deflates_the_best_of_many_trials():
    rng = np.random.default_rng(7)
    trials = rng.normal(0, 0.02, 100)
    r = series(0)
    sr_star = math.sqrt(trials.var(ddof=1)) * (
        (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / 100) + EULER_GAMMA * stats.norm.ppf(1 - 1 / (100 * math.e))
    )
    assert deflated_sharpe_ratio(r, trials) == pytest.approx(
        probabilistic_sharpe_ratio(r, sr_star), rel=1e-12
    )
    assert deflated_sharpe_ratio(r, trials) < probabilistic_sharpe_ratio(r)
    summary = performance_summary(r, periods_per_year=252, trials_sharpe=trials)
    assert summary["dsr"] == pytest.approx(deflated_sharpe_ratio(r, trials))


def test_bad_returns_are_an_error():
    with pytest.raises(ValueError, match="finite"):
        performance_summary([0.01, float("nan")], periods_per_year=252)
    with pytest.raises(ValueError, match="non-empty"):
        performance_summary([], periods_per_year=252)
