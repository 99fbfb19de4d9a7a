"""Market data as every model user sees it (trainer, environments, backtests, serving):
normalised feature rows, prices, task tags and fold parts, and the feature windows of a decision.

Bars of every symbol are laid end to end (each symbol contiguous, in time order). A decision at
bar t reads the strategic rows t-high_level_lookback+1..t and tactical rows t-low_level_lookback+1..t
of its own symbol, and earns the return from open[t+1] (its fill) to open[t+2] (the next fill).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from hrm_core.core.config import HRMConfig
from hrm_core.core.errors import HRMError
from hrm_core.core.feature_registry import model_features
from hrm_core.core.vocabulary import PARTS, TASKS

if TYPE_CHECKING:
    import torch

FEATURE_CLIP = 10.0


@dataclass(frozen=True)
class MarketData:
    symbols: list[str]
    symbol_id: np.ndarray  # [N] int, contiguous per symbol
    ts: np.ndarray  # [N] datetime64
    strategic: np.ndarray  # [N, strategic features] float32, normalised
    tactical: np.ndarray  # [N, tactical features] float32, normalised
    open: np.ndarray  # [N] float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    atr: np.ndarray  # [N] ATR(20) in price units (NaN in warm-up)
    task: np.ndarray  # [N] int, index into TASKS, -1 none
    part: np.ndarray  # [N] int, index into PARTS, -1 unused (warm-up, purged, embargo)
    strategic_names: tuple[str, ...]
    tactical_names: tuple[str, ...]
    normalization: dict[str, tuple[float, float]] = field(default_factory=dict)  # feature -> mean, std

    def __len__(self) -> int:
        return len(self.open)

    def next_returns(self) -> np.ndarray:
        """[N] return of a position decided at t: open[t+2] / open[t+1] - 1 (NaN past the end)."""
        out = np.full(len(self), np.nan)
        out[:-2] = self.open[2:] / self.open[1:-1] - 1
        same = np.zeros(len(self), dtype=bool)
        same[:-2] = self.symbol_id[2:] == self.symbol_id[:-2]
        return np.where(same, out, np.nan)

    def decision_rows(self, part: str, lookback: int) -> np.ndarray:
        """Rows of ``part`` with a full window of ``lookback`` bars and a known next return."""
        index = np.arange(len(self))
        start = index - (lookback - 1)
        ok = (self.part == PARTS.index(part)) & (start >= 0) & np.isfinite(self.next_returns())
        ok &= self.symbol_id[np.clip(start, 0, None)] == self.symbol_id
        ok &= np.isfinite(self.atr) & (self.atr > 0)
        return index[ok]

    def with_part(self, part: np.ndarray) -> MarketData:
        return replace(self, part=part)

    def chunk_starts(self, part: str, lookback: int, length: int) -> np.ndarray:
        """Start rows of every chunk of ``length`` consecutive decisions inside ``part``."""
        valid = np.zeros(len(self) + length, dtype=bool)
        valid[self.decision_rows(part, lookback)] = True
        window_ok = np.lib.stride_tricks.sliding_window_view(valid, length)[: len(self)].all(axis=1)
        return np.flatnonzero(window_ok)

    def windows(
        self, rows: np.ndarray, high_level_lookback: int, low_level_lookback: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Strategic [n, high, Fs] and tactical [n, low, Ft] windows ending at ``rows``, refused when
        a window would reach into another symbol's bars or before the first bar."""
        rows = np.asarray(rows, dtype=np.int64)
        for lookback in (high_level_lookback, low_level_lookback):
            start = rows - (lookback - 1)
            bad = (start < 0) | (self.symbol_id[np.clip(start, 0, None)] != self.symbol_id[rows])
            if bad.any():
                row = int(rows[np.flatnonzero(bad)[0]])
                raise HRMError(
                    f"{self.symbols[self.symbol_id[row]]} bar {self.ts[row]}: a {lookback}-bar window "
                    "would reach before the symbol's first bar; decide only on bars with a full window"
                )
        strategic = self.strategic[rows[:, None] + np.arange(-high_level_lookback + 1, 1)]
        tactical = self.tactical[rows[:, None] + np.arange(-low_level_lookback + 1, 1)]
        return strategic, tactical


def concat(datasets: list[MarketData]) -> MarketData:
    """Lay several datasets end to end (their symbols renumbered; names must differ)."""
    first = datasets[0]
    names = [s for d in datasets for s in d.symbols]
    if len(set(names)) != len(names):
        raise ValueError(f"concat: symbol names repeat across datasets: {sorted(names)}")
    offsets = np.cumsum([0] + [len(d.symbols) for d in datasets[:-1]])
    return MarketData(
        symbols=[s for d in datasets for s in d.symbols],
        symbol_id=np.concatenate([d.symbol_id + o for d, o in zip(datasets, offsets, strict=True)]),
        **{
            name: np.concatenate([getattr(d, name) for d in datasets])
            for name in ("ts", "strategic", "tactical", "open", "high", "low", "close", "atr", "task", "part")
        },
        strategic_names=first.strategic_names,
        tactical_names=first.tactical_names,
        normalization=first.normalization,
    )


def load_market_data(
    con: duckdb.DuckDBPyConnection,
    config: HRMConfig,
    fold: int,
    *,
    test_to_end: bool = False,
    normalization: dict[str, tuple[float, float]] | None = None,
) -> MarketData:
    """Read features, prices, task tags and the fold's parts from the warehouse, normalised with the
    fold's training statistics (``splits.normalization``), or with a model's own ``normalization``
    (a model from another fold must see features as it was trained). With ``test_to_end`` every
    bar after the fold's test part is test too: a model trained on this fold has seen none of
    them, so the test parts of all later folds are out of sample for it and one backtest can cover
    them all."""
    stats = con.execute(
        "SELECT feature, mean, std FROM splits.normalization WHERE fold = ?", [fold]
    ).fetchall()
    if not stats:
        raise HRMError(
            f"no features or normalisation for fold {fold}: run the data job (walk_forward_splits) first"
        )
    join = f"LEFT JOIN splits.rows AS r ON r.symbol = f.symbol AND r.ts = f.ts AND r.fold = {int(fold)}"
    part = "r.part"
    if test_to_end:
        join += (
            " LEFT JOIN (SELECT symbol, max(ts) AS test_end FROM splits.rows"
            f" WHERE fold = {int(fold)} AND part = 'test' GROUP BY symbol) AS t ON t.symbol = f.symbol"
        )
        part = "COALESCE(r.part, CASE WHEN f.ts > t.test_end THEN 'test' END)"
    if normalization is None:
        normalization = {name: (mean, std) for name, mean, std in stats}
    return read_market_data(con, config, normalization, part, join)


def read_market_data(
    con: duckdb.DuckDBPyConnection,
    config: HRMConfig,
    normalization: dict[str, tuple[float, float]],
    part_sql: str,
    join_sql: str = "",
) -> MarketData:
    """Model columns of ``features.hierarchical`` with prices and task tags, normalised with
    ``normalization``; ``part_sql`` (with ``join_sql``) names each row's part."""
    return _read(
        con,
        config,
        normalization,
        f"l.task, {part_sql} AS part",
        f"LEFT JOIN labels.forward AS l USING (symbol, ts) {join_sql}",
    )


def read_latest_bars(
    con: duckdb.DuckDBPyConnection,
    config: HRMConfig,
    normalization: dict[str, tuple[float, float]],
    bars: int,
    symbols: list[str] | None = None,
) -> MarketData:
    """The last ``bars`` rows of each symbol (of ``symbols``, or all): what a decision at the
    latest bar reads, so serving and paper trading cost the same however long the history. No
    task tags or parts (a warehouse that serves need not have labels or splits)."""
    where = "" if symbols is None else "WHERE f.symbol IN (SELECT unnest(?::VARCHAR[]))"
    return _read(
        con,
        config,
        normalization,
        "NULL AS task, NULL AS part",
        f"{where} QUALIFY row_number() OVER (PARTITION BY f.symbol ORDER BY f.ts DESC) <= {int(bars)}",
        [] if symbols is None else [symbols],
    )


def _read(
    con: duckdb.DuckDBPyConnection,
    config: HRMConfig,
    normalization: dict[str, tuple[float, float]],
    tags_sql: str,
    tail_sql: str,
    params: list | None = None,
) -> MarketData:
    hf = config.hierarchical_features
    columns = model_features(hf.strategic_indicators, hf.tactical_indicators)
    names = columns["strategic"] + columns["tactical"]
    frame = con.execute(
        f"""
        SELECT f.symbol, f.ts, {", ".join(f"f.{c}" for c in names)}, f.h_atr_20 AS atr,
               c.open, c.high, c.low, c.close, {tags_sql}
        FROM features.hierarchical AS f
        JOIN clean.ohlcv AS c USING (symbol, ts)
        {tail_sql}
        ORDER BY f.symbol, f.ts
        """,
        params or [],
    ).df()
    if frame.empty:
        raise HRMError("no feature rows: run the data job (hierarchical_features) first")
    mean = pd.Series({name: normalization[name][0] for name in names})
    std = pd.Series({name: normalization[name][1] for name in names})

    def normalised(cols: list[str]) -> np.ndarray:
        values = (frame[cols] - mean[cols]) / std[cols]
        return np.clip(values.fillna(0.0).to_numpy(np.float32), -FEATURE_CLIP, FEATURE_CLIP)

    symbols = sorted(frame["symbol"].unique())
    return MarketData(
        symbols=symbols,
        symbol_id=frame["symbol"].map({s: i for i, s in enumerate(symbols)}).to_numpy(np.int64),
        ts=frame["ts"].to_numpy(),
        strategic=normalised(columns["strategic"]),
        tactical=normalised(columns["tactical"]),
        open=frame["open"].to_numpy(float),
        high=frame["high"].to_numpy(float),
        low=frame["low"].to_numpy(float),
        close=frame["close"].to_numpy(float),
        atr=frame["atr"].to_numpy(float),
        task=frame["task"].map({t: i for i, t in enumerate(TASKS)}).fillna(-1).to_numpy(np.int64),
        part=frame["part"].map({p: i for i, p in enumerate(PARTS)}).fillna(-1).to_numpy(np.int64),
        strategic_names=tuple(columns["strategic"]),
        tactical_names=tuple(columns["tactical"]),
        normalization={name: normalization[name] for name in names},
    )


def window_view(features: torch.Tensor, length: int) -> torch.Tensor:
    """Every ``length``-bar window of ``features`` [T, F] as a view [T - length + 1, length, F]
    (window w holds rows w .. w + length - 1): no copy, and gathering windows from it with
    ``index_select`` copies each one as a block, 10x faster than indexing a [N, length] grid of
    rows."""
    rows, width = features.shape
    return features.contiguous().as_strided((rows - length + 1, length, width), (width, width, 1))


def gather_windows(view: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The windows of ``view`` (``window_view``) ending at ``rows`` [n] -> [n, length, F]."""
    return view.index_select(0, rows - (view.shape[1] - 1))
