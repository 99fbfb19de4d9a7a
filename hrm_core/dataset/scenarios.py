"""Generated markets: a planted edge (the evidence that the model can learn), and scenario
generators that fill task tags the real data has too few of.

``planted_regime_market``: open-to-open returns follow R[t+1] = μ + σ·(ρ·s[t]·x[t] + ε), where x is a
tactical signal known at bar t's close and the hidden regime s is +1 (the signal continues:
momentum) or −1 (it reverses) and switches on average every ``mean_regime_bars`` bars. The regime
shows only in the strategic features (a noisy reading of s); the tactical features carry the
signal but no returns, so the regime cannot be read off recent returns in the L window either.
Trading the edge needs both modules — the signal from L, its sign from H — while buy-and-hold
earns nothing (μ = 0). With ρ = 0 it is a noise market (nothing to learn: the optimum is flat)
and with μ > 0 a drift market (the optimum is the loss's analytic one, ``training/losses.py``).

``multi_timescale_market``: the same edge with a slower regime whose reading is so noisy on any one
bar that only its mean over a long strategic window tells it (``regime_noise`` 3: one bar's reading
has a signal-to-noise ratio of 1/3, a 100-bar mean about 3): the case the H/L split exists for.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from hrm_core.core.config import HRMConfig
from hrm_core.core.feature_registry import model_columns
from hrm_core.core.vocabulary import PARTS, TASKS
from hrm_core.data.warehouse import ensure_tables, replace_symbols, transaction
from hrm_core.dataset.market import MarketData, read_market_data
from hrm_core.features.build import build_features
from hrm_core.features.labels import build_labels


def planted_regime_market(
    n_bars: int = 6000,
    seed: int = 0,
    rho: float = 0.4,
    sigma: float = 0.01,
    mean_regime_bars: int = 150,
    fractions: tuple[float, float] = (0.6, 0.15),
    gap: int = 5,
    drift: float = 0.0,
    regime: float | None = None,
    regime_noise: float = 0.5,
) -> MarketData:
    """One symbol of ``n_bars`` bars: the first ``fractions[0]`` train, the next ``fractions[1]``
    validation, the rest test, with ``gap`` unused bars between parts. ``regime`` +1 or −1 holds
    one regime throughout (a pure momentum or pure reversal market); ``regime_noise`` is the
    deviation of the strategic feature's noise around the regime."""
    rng = np.random.default_rng(seed)
    switches = rng.random(n_bars) < 1.0 / mean_regime_bars
    regime = np.where(np.cumsum(switches) % 2 == 0, 1.0, -1.0) if regime is None else np.full(n_bars, regime)
    signal = rng.standard_normal(n_bars)
    returns = np.zeros(n_bars)  # returns[t]: open[t] -> open[t+1]
    returns[1:] = drift + sigma * (rho * regime[:-1] * signal[:-1] + rng.standard_normal(n_bars - 1))
    opens = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns[:-1])]))
    closes = opens * np.exp(returns)  # close[t] = open[t+1]: no overnight gaps
    highs = np.maximum(opens, closes) * (1 + sigma / 4)
    lows = np.minimum(opens, closes) * (1 - sigma / 4)

    lagged = np.concatenate([[0.0], signal[:-1]])
    strategic = np.column_stack(
        [regime + regime_noise * rng.standard_normal(n_bars), rng.standard_normal((n_bars, 3))]
    ).astype(np.float32)
    tactical = np.column_stack([signal, lagged, rng.standard_normal((n_bars, 2))]).astype(np.float32)

    part = np.full(n_bars, -1)
    train_end = int(n_bars * fractions[0])
    validation_end = int(n_bars * (fractions[0] + fractions[1]))
    part[:train_end] = PARTS.index("train")
    part[train_end + gap : validation_end] = PARTS.index("validation")
    part[validation_end + gap :] = PARTS.index("test")
    return MarketData(
        symbols=["PLANTED"],
        symbol_id=np.zeros(n_bars, dtype=np.int64),
        ts=np.arange(n_bars).astype("datetime64[D]"),
        strategic=strategic,
        tactical=tactical,
        open=opens,
        high=highs,
        low=lows,
        close=closes,
        atr=np.full(n_bars, 100.0 * sigma),
        task=np.full(n_bars, -1),
        part=part,
        strategic_names=("regime_reading", "noise_1", "noise_2", "noise_3"),
        tactical_names=("signal_0", "signal_1", "noise_1", "noise_2"),
    )


def multi_timescale_market(n_bars: int = 10_000, seed: int = 0) -> MarketData:
    """A slow regime (a switch every 400 bars on average) read only through a long window, and a
    fast signal whose sign it sets (module docstring)."""
    return planted_regime_market(n_bars, seed=seed, mean_regime_bars=400, regime_noise=3.0)


def _runs(rng: np.random.Generator, n_bars: int, low: int, high: int) -> np.ndarray:
    """Run index per bar, runs of low..high bars."""
    lengths = rng.integers(low, high + 1, size=n_bars // low + 1)
    return np.repeat(np.arange(len(lengths)), lengths)[:n_bars]


def _trend(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    runs = _runs(rng, n, 40, 120)
    drift = rng.choice([-1.0, 1.0], size=runs[-1] + 1) * rng.uniform(0.3, 0.6, size=runs[-1] + 1)
    return sigma * (drift[runs] + rng.standard_normal(n))


def _mean_reversion(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """An Ornstein-Uhlenbeck log price: stretches that are pulled back."""
    level, returns = 0.0, np.zeros(n)
    for t in range(n):
        returns[t] = -0.15 * level + sigma * rng.standard_normal()
        level += returns[t]
    return returns


def _breakout(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    runs = _runs(rng, n, 60, 100)
    age = np.arange(n) - np.searchsorted(runs, runs)  # bars since the run began
    direction = rng.choice([-1.0, 1.0], size=runs[-1] + 1)[runs]
    quiet = age < 45
    return np.where(
        quiet, sigma / 3 * rng.standard_normal(n), sigma * (0.8 * direction + rng.standard_normal(n))
    )


def _adverse(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    burst = (_runs(rng, n, 15, 40) % 3) == 0
    whipsaw = np.where(np.arange(n) % 2 == 0, 1.0, -1.0) * 2.5 * sigma * (rng.random(n) < 0.3)
    return np.where(burst, 3 * sigma * rng.standard_normal(n) + whipsaw, sigma * rng.standard_normal(n))


TASK_GENERATORS = {
    "trend": _trend,
    "mean_reversion": _mean_reversion,
    "breakout": _breakout,
    "adverse": _adverse,
}
"""Per task, log close-to-close returns rich in that situation (σ = 1 % a bar)."""


def task_scenario_bars(task: str, n_bars: int, seed: int) -> pd.DataFrame:
    """Daily OHLCV bars of one synthetic symbol (``SYN_<task>``) shaped to contain ``task``."""
    rng = np.random.default_rng(seed)
    sigma = 0.01
    close = 100.0 * np.exp(np.cumsum(TASK_GENERATORS[task](rng, n_bars, sigma)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(sigma / 5 * rng.standard_normal(n_bars))
    wick = np.abs(rng.standard_normal((2, n_bars))) * sigma / 2
    return pd.DataFrame(
        {
            "symbol": f"SYN_{task}",
            "ts": pd.date_range("2000-01-03", periods=n_bars, freq="B"),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]),
            "close": close,
            "volume": rng.lognormal(13, 0.3, n_bars),
        }
    )


def scarce_tasks(data: MarketData, config: HRMConfig) -> list[str]:
    """Tasks of the mix with fewer than ``training.min_task_chunks`` training chunks starting on a
    bar of that task (tags read the realised path: this decides which scenario symbols to add, never
    which real chunks to train on)."""
    training = config.training
    starts = data.chunk_starts("train", config.hierarchical_features.high_level_lookback, training.chunk_bars)
    return [
        task
        for index, task in enumerate(TASKS)
        if training.task_mix.get(task, 0) > 0
        and (data.task[starts] == index).sum() < training.min_task_chunks
    ]


def synthetic_task_data(tasks: list[str], config: HRMConfig, data: MarketData, seed: int) -> MarketData:
    """Scenario symbols for ``tasks``, through the same feature and label SQL as real bars and
    normalised with ``data``'s training statistics; every row past the warm-up is training data."""
    bars = pd.concat(
        [task_scenario_bars(task, config.training.synthetic_bars, seed + i) for i, task in enumerate(tasks)]
    )
    con = duckdb.connect()
    ensure_tables(con)
    with transaction(con):
        replace_symbols(con, "clean.ohlcv", bars, sorted(bars["symbol"].unique()))
    build_features(con)
    build_labels(con, config.labels)
    hf = config.hierarchical_features
    _, warmup = model_columns(hf.strategic_indicators, hf.tactical_indicators, hf.high_level_lookback)
    part = f"CASE WHEN row_number() OVER (PARTITION BY f.symbol ORDER BY f.ts) > {warmup} THEN 'train' END"
    return read_market_data(con, config, data.normalization, part)
