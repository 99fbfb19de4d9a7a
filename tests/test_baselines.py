"""The rule baselines: decided from the past only, and their rules on hand-made prices."""

import numpy as np
import pandas as pd
import pytest

from hrm_core.sim.baselines import BASELINES, sma_crossover, time_series_momentum, volatility_targeted


def bars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    return pd.DataFrame({"ts": pd.date_range("2021-01-01", periods=n, freq="D"), "close": close})


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_decide_from_the_past_only(name):
    close = bars(600, 3)["close"]
    exposure = BASELINES[name](close, 252)
    cut = 400
    changed = close.copy()
    changed.iloc[cut + 1 :] *= np.exp(np.random.default_rng(0).normal(0, 0.1, len(close) - cut - 1))
    pd.testing.assert_series_equal(exposure.iloc[: cut + 1], BASELINES[name](changed, 252).iloc[: cut + 1])
    assert exposure.between(-1, 1).all() and exposure.iloc[cut:].abs().sum() > 0


def test_baseline_rules():
    close = pd.Series(np.concatenate([np.linspace(100, 50, 300), np.linspace(50, 150, 300)]))
    sma = sma_crossover(close)
    assert (sma.iloc[:199] == 0).all() and sma.iloc[-1] == 1 and sma.iloc[300] == 0
    momentum = time_series_momentum(close)
    assert momentum.iloc[260] == -1 and momentum.iloc[-1] == 1 and (momentum.iloc[:252] == 0).all()
    rng = np.random.default_rng(1)
    calm = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.002, 300))))
    wild = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.04, 300))))
    assert volatility_targeted(calm, 252).iloc[-1] == 1.0  # capped
    assert volatility_targeted(wild, 252).iloc[-1] == pytest.approx(
        0.15 / (np.log(wild).diff().iloc[-20:].std() * np.sqrt(252))
    )
