"""A registered version's decision at each symbol's latest bar, reading only the bars it needs.

Paper trading (``paper.py``) and serving (``pipelines/server.py``) both decide here. A decision
reads the last ``high_level_lookback`` feature rows of its symbol, normalised with the version's
own statistics, the sizing cap at the bar and the benchmark's exposure there (which needs the last
``volatility_window`` returns); ``bars_needed`` is the most of these, and ``latest_bars`` reads that
many rows per symbol, whatever the history's length. The network's outputs depend on the market
alone, so ``LatestBars`` keeps them: deciding for a position held (``decide``) is then arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from hrm_core.core.errors import HRMError
from hrm_core.dataset.market import read_latest_bars
from hrm_core.model.compiled import HEAD_OUTPUTS
from hrm_core.model.exposure import benchmark_exposure, exposure_cap
from hrm_core.model.serving import LoadedVersion


class UnknownSymbol(HRMError):
    """A symbol the warehouse does not hold."""


def unknown_symbol(symbol: str, known: list[str]) -> UnknownSymbol:
    return UnknownSymbol(f"unknown symbol {symbol!r}; the warehouse has {', '.join(known) or 'no symbols'}")


class NotReady(HRMError):
    """A symbol whose history is too short for a decision (a full window and a known ATR)."""


@dataclass(frozen=True)
class LatestBars:
    """Per symbol (in ``symbols`` order): its latest bar and what a decision there reads, with the
    network's outputs on its windows. ``ready`` is False where the history is too short to decide."""

    symbols: list[str]
    ts: np.ndarray  # [S] datetime64, the latest bar
    close: np.ndarray  # [S] float64
    atr: np.ndarray  # [S] float64 (0 where unknown)
    cap: np.ndarray  # [S] float32, the sizing cap
    benchmark: np.ndarray  # [S] float32, the benchmark's exposure
    raw: np.ndarray  # [S, head outputs] float32 (zeros where not ready)
    steps: np.ndarray  # [S] segments used
    ready: np.ndarray  # [S] bool

    def index(self, symbols: list[str]) -> np.ndarray:
        """Positions of ``symbols`` in this set (``UnknownSymbol`` for one it lacks)."""
        where = {s: i for i, s in enumerate(self.symbols)}
        unknown = [s for s in symbols if s not in where]
        if unknown:
            raise unknown_symbol(unknown[0], self.symbols)
        return np.array([where[s] for s in symbols], dtype=np.int64)


def bars_needed(loaded: LoadedVersion) -> int:
    """Rows per symbol a decision at the latest bar reads: its windows and the benchmark's returns."""
    config = loaded.config
    hf = config.hierarchical_features
    return max(hf.high_level_lookback, hf.low_level_lookback, config.policy.volatility_window + 1)


def latest_bars(
    con: duckdb.DuckDBPyConnection,
    loaded: LoadedVersion,
    symbols: list[str] | None = None,
    threads: int = 1,
) -> LatestBars:
    """The latest bar of each symbol (of ``symbols``, or every symbol with features) and the
    network's outputs there, computed on up to ``threads`` threads."""
    config = loaded.config
    hf = config.hierarchical_features
    normalization = {name: tuple(stats) for name, stats in loaded.meta["normalization"].items()}
    try:
        data = read_latest_bars(con, config, normalization, bars_needed(loaded), symbols)
    except HRMError:
        if not symbols:
            raise
        held = [
            s
            for (s,) in con.execute("SELECT DISTINCT symbol FROM features.hierarchical ORDER BY 1").fetchall()
        ]
        raise unknown_symbol(symbols[0], held) from None
    trained_on = tuple(tuple(names) for names in loaded.meta["feature_names"])
    if trained_on != (data.strategic_names, data.tactical_names):
        raise HRMError(
            f"{loaded.label}: version {loaded.version} reads features {trained_on}, the warehouse "
            f"gives {(data.strategic_names, data.tactical_names)}"
        )
    if symbols is not None:
        unknown = sorted(set(symbols) - set(data.symbols))
        if unknown:
            raise unknown_symbol(unknown[0], data.symbols)
    last = np.flatnonzero(np.r_[data.symbol_id[1:] != data.symbol_id[:-1], True])  # [S] rows
    first = np.r_[0, last[:-1] + 1]
    ready = (last - first + 1 >= hf.high_level_lookback) & np.isfinite(data.atr[last]) & (data.atr[last] > 0)
    atr = np.nan_to_num(data.atr[last])
    trading = config.trading
    benchmark = benchmark_exposure(data.close, data.symbol_id, config.policy, trading)[last]
    raw = np.zeros((len(last), len(HEAD_OUTPUTS)), dtype=np.float32)
    steps = np.zeros(len(last), dtype=np.float32)
    if ready.any():
        strategic, tactical = data.windows(last[ready], hf.high_level_lookback, hf.low_level_lookback)
        raw[ready], steps[ready] = loaded.model.heads(strategic, tactical, threads)
    return LatestBars(
        symbols=[data.symbols[i] for i in data.symbol_id[last]],
        ts=data.ts[last],
        close=data.close[last],
        atr=atr,
        cap=np.asarray(exposure_cap(data.close[last], atr, trading), dtype=np.float32),
        benchmark=benchmark.astype(np.float32),
        raw=raw,
        steps=steps,
        ready=ready,
    )


def decide(loaded: LoadedVersion, bars: LatestBars, rows: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Decision columns (``serving.OUTPUT_COLUMNS``) at the latest bar of ``bars``' ``rows``, for
    the exposures ``held`` there (fractions of equity, + long)."""
    rows = np.asarray(rows, dtype=np.int64)
    not_ready = [bars.symbols[i] for i in rows if not bars.ready[i]]
    if not_ready:
        raise NotReady(
            f"{not_ready[0]}: its history is too short for a decision (a "
            f"{loaded.config.hierarchical_features.high_level_lookback}-bar window and a known ATR)"
        )
    held = np.broadcast_to(np.asarray(held, dtype=np.float32), rows.shape)
    return loaded.model.decide_from_heads(
        bars.raw[rows], bars.steps[rows], bars.cap[rows], held, bars.benchmark[rows]
    )
