"""``ExposureEnv``: the vector env as RL policies see it — a signal in, a shaped reward out.

Each step turns every episode's signal into a target exposure (signal × the sizing cap), moves it
through the no-trade band and derives the seed's action (``model/exposure.py``), exactly as the
backtester and the agent do, then executes all episodes in one call of ``VectorTradingEnv``
(fills at the next open, costs, stops and targets when configured). Episodes start at random
decision bars of the part (or at given rows, for GRPO's groups) and restart when they end.
Observations are the decision bars' feature windows, gathered as tensors, and the exposure held.
"""

from __future__ import annotations

import numpy as np
import torch

from hrm_core.config import HRMConfig
from hrm_core.data.market import MarketData, gather_windows, window_view
from hrm_core.model.exposure import action_of, exposure_cap, next_position
from hrm_core.model.trader import MarketInputs
from hrm_core.rl.rewards import RewardShaper
from hrm_core.sim.decisions import SHARES, exit_levels
from hrm_core.sim.vector_env import VectorTradingEnv


class ExposureEnv:
    def __init__(
        self,
        data: MarketData,
        config: HRMConfig,
        n_envs: int,
        episode_bars: int,
        seed: int,
        part: str = "train",
        allowed_starts: np.ndarray | None = None,
    ) -> None:
        self.vec = VectorTradingEnv(data, config, n_envs, part, episode_bars, seed, allowed_starts)
        self.n_envs, self.band = n_envs, config.trading.no_trade_band
        hf = config.hierarchical_features
        self.high, self.low = hf.high_level_lookback, hf.low_level_lookback
        self.strategic = window_view(torch.from_numpy(data.strategic), self.high)
        self.tactical = window_view(torch.from_numpy(data.tactical), self.low)
        close = torch.from_numpy(np.asarray(data.close, dtype=float))
        self.cap = exposure_cap(close, torch.from_numpy(np.nan_to_num(data.atr)), config.trading).float()
        bar_return = np.zeros(len(data))
        bar_return[:-1] = data.close[1:] / data.close[:-1] - 1  # close[t] -> close[t+1]
        self.bar_return = torch.from_numpy(bar_return)
        self.stop_atr, self.target_atr = exit_levels(config.trading)
        self.shaper = RewardShaper(config, n_envs)
        self.held = torch.zeros(n_envs)

    @property
    def rows(self) -> np.ndarray:
        """[N] the decision bar of each episode."""
        return self.vec.rows

    def reset(self, start_rows: np.ndarray | None = None) -> None:
        self.vec.reset(start_rows)
        self.held.zero_()
        self.shaper.reset(torch.ones(self.n_envs, dtype=torch.bool))

    def windows(self, rows: np.ndarray | torch.Tensor) -> MarketInputs:
        """Feature windows ending at ``rows`` (decision bars: full windows of their own symbol)."""
        rows = torch.as_tensor(rows).reshape(-1)
        return MarketInputs(gather_windows(self.strategic, rows), gather_windows(self.tactical, rows))

    def step(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Execute ``signal`` [N] (clamped to [−1, 1]); returns rewards, done flags and net returns."""
        rows = torch.from_numpy(self.vec.rows.copy())
        target = signal.detach().float().clamp(-1.0, 1.0) * self.cap[rows]
        position = next_position(target, self.held, self.band)
        action = action_of(position, self.held)
        stop = np.full(self.n_envs, self.stop_atr)
        level = np.full(self.n_envs, self.target_atr)
        _, net, done = self.vec.step(action.numpy(), position.abs().numpy(), stop, level)
        net, done = torch.from_numpy(net), torch.from_numpy(done)
        reward = self.shaper(net, (position - self.held).double(), self.bar_return[rows], done)
        flat = torch.from_numpy(self.vec.states[:, SHARES] == 0.0)  # a stop or target closed it
        self.held = torch.where(done | flat, torch.zeros_like(position), position)
        return reward, done, net.float()

    def state_dict(self) -> dict:
        shaper = {k: v.clone() for k, v in vars(self.shaper).items() if isinstance(v, torch.Tensor)}
        vec = self.vec.state_dict()
        vec = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in vec.items()}
        return {"vec": vec, "held": self.held.clone(), "shaper": shaper}

    def load_state_dict(self, state: dict) -> None:
        vec = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state["vec"].items()}
        self.vec.load_state_dict(vec)
        self.held = state["held"].clone()
        for name, value in state["shaper"].items():
            setattr(self.shaper, name, value.clone())
