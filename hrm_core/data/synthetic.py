"""Generated OHLCV bars for tests and benchmarks: a geometric random walk with consistent bars."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_walk_bars(
    n_symbols: int, n_bars: int, freq: str = "1D", seed: int = 0, start: str = "2000-01-03"
) -> pd.DataFrame:
    """Bars for ``n_symbols`` symbols (``S0000``, ...), each ``n_bars`` long at ``freq``.

    Opens gap from the previous close, highs and lows bracket open and close, volumes are
    log-normal: every bar passes the validation rules.
    """
    rng = np.random.default_rng(seed)
    shape = (n_symbols, n_bars)
    gap = rng.normal(0.0, 0.002, shape)
    body = rng.normal(0.0003, 0.01, shape)
    log_close = np.log(100.0) + np.cumsum(gap + body, axis=1)
    close = np.exp(log_close)
    open_ = close * np.exp(-body)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, shape)))
    volume = np.round(rng.lognormal(13.0, 0.5, shape))
    ts = pd.date_range(start, periods=n_bars, freq=freq, tz="UTC")
    return pd.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(n_symbols)], n_bars),
            "ts": np.tile(ts, n_symbols),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
        }
    )
