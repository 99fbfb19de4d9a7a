"""Market data as the trainer sees it: normalised feature rows, prices, task tags and fold parts.

Bars of every symbol are laid end to end (each symbol contiguous, in time order). A decision at
bar t reads the strategic rows t-high_level_lookback+1..t and tactical rows t-low_level_lookback+1..t
of its own symbol, and earns the return from open[t+1] (its fill) to open[t+2] (the next fill).
Training samples *chunks* of consecutive decisions, so that the loss can judge a path of
positions (Sharpe, drawdown, long-run return) and not only single bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import pandas as pd
import torch

from hrm_core.config import HRMConfig
from hrm_core.errors import HRMError
from hrm_core.features.registry import model_features
from hrm_core.model.account import account_state
from hrm_core.model.hrm import MarketInputs

TASKS = ("trend", "mean_reversion", "breakout", "adverse")
PARTS = ("train", "validation", "test")
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

    def chunk_starts(self, part: str, lookback: int, length: int) -> dict[int, np.ndarray]:
        """Start rows of chunks of ``length`` consecutive decisions inside ``part``, per task index
        of the start bar (-1: any tag)."""
        valid = np.zeros(len(self) + length, dtype=bool)
        valid[self.decision_rows(part, lookback)] = True
        window_ok = np.lib.stride_tricks.sliding_window_view(valid, length)[: len(self)].all(axis=1)
        starts = np.flatnonzero(window_ok)
        by_task = {-1: starts}
        for task in range(len(TASKS)):
            by_task[task] = starts[self.task[starts] == task]
        return by_task


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
    con: duckdb.DuckDBPyConnection, config: HRMConfig, fold: int, *, test_to_end: bool = False
) -> MarketData:
    """Read features, prices, task tags and the fold's parts from the warehouse, normalised with the
    fold's training statistics (``splits.normalization``). With ``test_to_end`` every bar after
    the fold's test part is test too: a model trained on this fold has seen none of them, so the
    test parts of all later folds are out of sample for it and one backtest can cover them all."""
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
    return read_market_data(con, config, {name: (mean, std) for name, mean, std in stats}, part, join)


def read_market_data(
    con: duckdb.DuckDBPyConnection,
    config: HRMConfig,
    normalization: dict[str, tuple[float, float]],
    part_sql: str,
    join_sql: str = "",
) -> MarketData:
    """Model columns of ``features.hierarchical`` with prices and task tags, normalised with
    ``normalization``; ``part_sql`` (with ``join_sql``) names each row's part."""
    hf = config.hierarchical_features
    columns = model_features(hf.strategic_indicators, hf.tactical_indicators)
    names = columns["strategic"] + columns["tactical"]
    frame = con.execute(
        f"""
        SELECT f.symbol, f.ts, {", ".join(f"f.{c}" for c in names)}, f.h_atr_20 AS atr,
               c.open, c.high, c.low, c.close, l.task, {part_sql} AS part
        FROM features.hierarchical AS f
        JOIN clean.ohlcv AS c USING (symbol, ts)
        LEFT JOIN labels.forward AS l USING (symbol, ts)
        {join_sql}
        ORDER BY f.symbol, f.ts
        """
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


@dataclass
class Chunks:
    """A batch of ``B`` chunks of ``T`` consecutive decisions, flattened to B*T samples."""

    inputs: MarketInputs
    next_return: torch.Tensor  # [B, T]
    held: torch.Tensor  # [B, T] position held before each decision (the account's)
    rows: torch.Tensor  # [B, T] data rows of the decisions


class WindowSampler:
    """Turns data rows into model inputs, and samples training chunks by the task mix.

    During training the account state comes from a random position process (flat, long or short
    runs of random length and size) rather than from the model's own earlier decisions: every
    decision in a chunk is then computed in parallel, and the model learns what to do from any
    account state, including ones its current policy would rarely reach. Costs are charged on the
    change from that held position, so holding is rewarded exactly as in a real backtest.
    """

    def __init__(self, data: MarketData, config: HRMConfig, device: torch.device) -> None:
        self.data = data
        self.config = config
        self.device = device
        hf = config.hierarchical_features
        self.high, self.low = hf.high_level_lookback, hf.low_level_lookback
        self.strategic = torch.tensor(data.strategic, device=device)
        self.tactical = torch.tensor(data.tactical, device=device)
        self.open = torch.tensor(data.open, device=device)
        self.close = torch.tensor(data.close, device=device)
        self.atr = torch.tensor(np.nan_to_num(data.atr, nan=0.0), device=device)
        self.next_return = torch.tensor(np.nan_to_num(data.next_returns(), nan=0.0), device=device)

    def windows(self, rows: torch.Tensor, held: torch.Tensor, entry: torch.Tensor) -> MarketInputs:
        """Inputs for decisions at ``rows`` [n] given the held position and its entry price."""
        strategic = self.strategic[rows[:, None] + torch.arange(-self.high + 1, 1, device=self.device)]
        tactical = self.tactical[rows[:, None] + torch.arange(-self.low + 1, 1, device=self.device)]
        trading = self.config.trading
        price, atr = self.close[rows], self.atr[rows]
        direction = torch.sign(held)
        account = account_state(
            position=held.double(),
            entry_price=entry,
            price=price,
            atr=atr,
            stop_price=entry - direction * trading.risk_multiplier * atr,
            target_price=entry + direction * trading.reward_multiplier * atr,
            equity_ratio=torch.ones_like(price),
        ).float()
        return MarketInputs(strategic=strategic, tactical=tactical, account=account, position=held.float())

    def chunk_starts(self, part: str) -> dict[int, np.ndarray]:
        """Valid chunk start rows per task index (-1: any tag), for chunks wholly inside ``part``."""
        return self.data.chunk_starts(part, self.high, self.config.training.chunk_bars)

    def sample(self, starts: dict[int, np.ndarray], batch: int, rng: np.random.Generator) -> Chunks:
        """``batch`` chunks: a task drawn by the task mix among tasks that have chunks, then a start."""
        mix = self.config.training.task_mix
        tasks = [i for i, name in enumerate(TASKS) if mix.get(name, 0) > 0 and len(starts[i])]
        if tasks:
            weights = np.array([mix[TASKS[i]] for i in tasks])
            picked = rng.choice(tasks, size=batch, p=weights / weights.sum())
            chosen = np.array([rng.choice(starts[t]) for t in picked])
        else:
            chosen = rng.choice(starts[-1], size=batch)
        return self.chunks(chosen, rng)

    def chunks(self, chunk_starts: np.ndarray, rng: np.random.Generator) -> Chunks:
        length = self.config.training.chunk_bars
        rows = torch.as_tensor(chunk_starts[:, None] + np.arange(length), device=self.device)  # [B, T]
        held, entry_rows = self._random_positions(rows.shape, rng)
        entry = self.open[(rows - entry_rows).clamp_min(0)]
        flat_rows = rows.reshape(-1)
        inputs = self.windows(flat_rows, held.reshape(-1), entry.reshape(-1))
        return Chunks(inputs=inputs, next_return=self.next_return[rows], held=held, rows=rows)

    def _random_positions(
        self, shape: torch.Size, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Held positions [B, T] from runs of flat / long / short (mean run 10 bars), and how many
        bars ago each run was entered."""
        batch, length = shape
        max_size = self.config.trading.max_position_size
        held = np.zeros((batch, length))
        age = np.zeros((batch, length), dtype=np.int64)
        state = rng.choice([-1.0, 0.0, 1.0], size=batch) * rng.uniform(0.25, 1.0, size=batch) * max_size
        run_age = rng.integers(0, 10, size=batch)
        for t in range(length):
            switch = rng.random(batch) < 0.1
            fresh = rng.choice([-1.0, 0.0, 1.0], size=batch) * rng.uniform(0.25, 1.0, size=batch) * max_size
            state = np.where(switch, fresh, state)
            run_age = np.where(switch, 0, run_age + 1)
            held[:, t], age[:, t] = state, run_age
        return torch.as_tensor(held, device=self.device), torch.as_tensor(age, device=self.device)
