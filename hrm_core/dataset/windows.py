"""Training batches: chunks of consecutive decisions with their returns, sizing caps and outcome
targets.

Chunks are sampled uniformly among every chunk that lies wholly inside the training part, so no
chunk is chosen by what happens after its first bar (the task mix is reached by the scenario
symbols ``training/scenarios.py`` adds, not by selecting real chunks on their future). A chunk's
decisions are computed in parallel: the model reads only market features, and the position path
follows from its own targets through the no-trade band (``model/exposure.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData, gather_windows, window_view
from hrm_core.dataset.targets import outcome_targets
from hrm_core.model.exposure import benchmark_exposure, exposure_cap
from hrm_core.model.trader import MarketInputs


@dataclass
class Chunks:
    """A batch of ``B`` chunks of ``T`` consecutive decisions; inputs flattened to B*T samples."""

    inputs: MarketInputs
    next_return: torch.Tensor  # [B, T] open[t+1] -> open[t+2]
    open: torch.Tensor  # [B, T+1] float64: the decisions' bars and the bar after the last
    close: torch.Tensor  # [B, T+1] float64
    cap: torch.Tensor  # [B, T] sizing cap of each decision
    benchmark: torch.Tensor  # [B, T] the benchmark's exposure at each decision
    up: torch.Tensor  # [B, T] 1.0 when the outcome horizon's return is positive, NaN unknown
    log_volatility: torch.Tensor  # [B, T] realised annualised log volatility, NaN unknown
    regime: torch.Tensor  # [B, T] index into REGIMES, -1 unknown
    rows: torch.Tensor  # [B, T] data rows of the decisions

    @property
    def shape(self) -> torch.Size:
        return self.next_return.shape


class WindowSampler:
    """Turns data rows into model inputs and samples training chunks."""

    def __init__(self, data: MarketData, config: HRMConfig, device: torch.device) -> None:
        self.data = data
        self.config = config
        self.device = device
        hf = config.hierarchical_features
        self.high, self.low = hf.high_level_lookback, hf.low_level_lookback
        self.strategic = window_view(torch.tensor(data.strategic, device=device), self.high)
        self.tactical = window_view(torch.tensor(data.tactical, device=device), self.low)
        self.next_return = torch.tensor(np.nan_to_num(data.next_returns(), nan=0.0), device=device)
        self.open = torch.tensor(data.open, device=device, dtype=torch.float64)
        self.close = torch.tensor(data.close, device=device, dtype=torch.float64)
        atr = torch.tensor(np.nan_to_num(data.atr, nan=0.0), device=device)
        self.cap = exposure_cap(self.close, atr, config.trading).float()
        benchmark = benchmark_exposure(data.close, data.symbol_id, config.policy, config.trading)
        self.benchmark = torch.tensor(benchmark, device=device, dtype=torch.float32)
        targets = outcome_targets(data, config.training.outcome_horizon, config.trading.periods_per_year)
        self.up = torch.tensor(targets.up, device=device, dtype=torch.float32)
        self.log_volatility = torch.tensor(targets.log_volatility, device=device, dtype=torch.float32)
        self.regime = torch.tensor(targets.regime, device=device)

    def windows(self, rows: torch.Tensor) -> MarketInputs:
        """Inputs for decisions at ``rows`` [n] (rows with a full window of their own symbol)."""
        return MarketInputs(gather_windows(self.strategic, rows), gather_windows(self.tactical, rows))

    def chunk_starts(self, part: str) -> np.ndarray:
        """Start rows of every chunk wholly inside ``part``."""
        return self.data.chunk_starts(part, self.high, self.config.training.chunk_bars)

    def sample(
        self, starts: np.ndarray, batch: int, rng: np.random.Generator, keep: slice = slice(None)
    ) -> Chunks:
        """``batch`` chunks with uniformly drawn starts; ``keep``: the slice of them this process
        trains on when the batch is split over processes (every process draws the whole batch)."""
        return self.chunks(rng.choice(starts, size=batch)[keep])

    def chunks(self, chunk_starts: np.ndarray) -> Chunks:
        length = self.config.training.chunk_bars
        bars = torch.as_tensor(chunk_starts[:, None] + np.arange(length + 1), device=self.device)  # [B, T+1]
        rows = bars[:, :-1]  # [B, T]
        return Chunks(
            inputs=self.windows(rows.reshape(-1)),
            next_return=self.next_return[rows],
            open=self.open[bars],
            close=self.close[bars],
            cap=self.cap[rows],
            benchmark=self.benchmark[rows],
            up=self.up[rows],
            log_volatility=self.log_volatility[rows],
            regime=self.regime[rows],
            rows=rows,
        )
