"""Generated markets with a known, planted edge: the evidence that the model can learn.

``planted_regime_market``: open-to-open returns follow R[t+1] = σ·(ρ·s[t]·x[t] + ε), where x is a
tactical signal known at bar t's close and the hidden regime s is +1 (the signal continues:
momentum) or −1 (it reverses) and switches on average every ``mean_regime_bars`` bars. The regime
shows only in the strategic features (a noisy reading of s); the tactical features carry the
signal but no returns, so the regime cannot be read off recent returns in the L window either.
Trading the edge needs both modules — the signal from L, its sign from H — while buy-and-hold
earns nothing (no drift).
"""

from __future__ import annotations

import numpy as np

from hrm_core.training.data import PARTS, MarketData


def planted_regime_market(
    n_bars: int = 6000,
    seed: int = 0,
    rho: float = 0.4,
    sigma: float = 0.01,
    mean_regime_bars: int = 150,
    fractions: tuple[float, float] = (0.6, 0.15),
    gap: int = 5,
) -> MarketData:
    """One symbol of ``n_bars`` bars: the first ``fractions[0]`` train, the next ``fractions[1]``
    validation, the rest test, with ``gap`` unused bars between parts."""
    rng = np.random.default_rng(seed)
    switches = rng.random(n_bars) < 1.0 / mean_regime_bars
    regime = np.where(np.cumsum(switches) % 2 == 0, 1.0, -1.0)
    signal = rng.standard_normal(n_bars)
    returns = np.zeros(n_bars)  # returns[t]: open[t] -> open[t+1]
    returns[1:] = sigma * (rho * regime[:-1] * signal[:-1] + rng.standard_normal(n_bars - 1))
    opens = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns[:-1])]))
    closes = opens * np.exp(returns)  # close[t] = open[t+1]: no overnight gaps
    highs = np.maximum(opens, closes) * (1 + sigma / 4)
    lows = np.minimum(opens, closes) * (1 - sigma / 4)

    lagged = np.concatenate([[0.0], signal[:-1]])
    strategic = np.column_stack(
        [regime + 0.5 * rng.standard_normal(n_bars), rng.standard_normal((n_bars, 3))]
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
