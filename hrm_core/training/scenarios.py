"""Generated markets with a known, planted edge: the evidence that the model can learn.

``planted_regime_market``: open-to-open returns follow R[t+1] = ρ·s[t]·R[t] + σ·ε, where the hidden
regime s is +1 (momentum) or −1 (reversal) and switches on average every ``mean_regime_bars``
bars. The regime shows only in the strategic features (a noisy reading of s); the tactical
features carry the last returns. Trading the planted edge needs both — the sign of the last
return from L and the regime from H — while buy-and-hold earns nothing (no drift).
"""

from __future__ import annotations

import numpy as np

from hrm_core.training.data import PARTS, MarketData


def planted_regime_market(
    n_bars: int = 6000,
    seed: int = 0,
    rho: float = 0.3,
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
    returns = np.zeros(n_bars)
    for t in range(1, n_bars):
        returns[t] = rho * regime[t - 1] * returns[t - 1] + sigma * rng.standard_normal()
    # returns[t] is open[t] -> open[t+1]; close[t] = open[t+1], so it is known at bar t's close
    opens = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns[:-1])]))
    closes = opens * np.exp(returns)
    highs = np.maximum(opens, closes) * (1 + sigma / 4)
    lows = np.minimum(opens, closes) * (1 - sigma / 4)

    scaled = returns / sigma
    lagged = np.concatenate([[0.0], scaled[:-1]])
    strategic = np.column_stack(
        [regime + 0.5 * rng.standard_normal(n_bars), rng.standard_normal((n_bars, 3))]
    ).astype(np.float32)
    tactical = np.column_stack([scaled, lagged, rng.standard_normal((n_bars, 2))]).astype(np.float32)

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
        tactical_names=("return_0", "return_1", "noise_1", "noise_2"),
    )
