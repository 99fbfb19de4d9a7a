"""``ExposureEnv``: the vector env as RL policies see it — a tilt in, a shaped active reward out.

Each step turns every episode's tilt into a target exposure (the benchmark plus ``max_tilt`` ×
tilt, within the cap), moves it through the no-trade band and derives the seed's action
(``model/exposure.py``), exactly as the backtester and the agent do, then executes all episodes in
one call of ``VectorTradingEnv`` (fills at the next open, every cost, stops and targets when
configured). The benchmark policy trades the same episodes in a twin env, and rewards are shaped
from the active net return (own − benchmark), the objective the supervised loss trains. Episodes
start at random decision bars of the part (or at given rows, for GRPO's groups) and restart when
they end. Observations are the decision bars' feature windows, gathered as tensors, and the tilt
held (``held_tilt``: the exposure held less the benchmark, over ``max_tilt``), as the model reads it.
"""

from __future__ import annotations

import numpy as np
import torch

from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData, gather_windows, window_view
from hrm_core.engine.decisions import exit_levels
from hrm_core.engine.vector_env import VectorTradingEnv
from hrm_core.model.exposure import action_of, benchmark_exposure, exposure_cap, next_position, policy_target
from hrm_core.model.trader import MarketInputs
from hrm_core.rl.rewards import RewardShaper


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
        self.twin = VectorTradingEnv(data, config, n_envs, part, episode_bars, seed, allowed_starts)
        self.n_envs, self.band, self.policy = n_envs, config.trading.no_trade_band, config.policy
        hf = config.hierarchical_features
        self.high, self.low = hf.high_level_lookback, hf.low_level_lookback
        self.strategic = window_view(torch.from_numpy(data.strategic), self.high)
        self.tactical = window_view(torch.from_numpy(data.tactical), self.low)
        close = torch.from_numpy(np.asarray(data.close, dtype=float))
        self.cap = exposure_cap(close, torch.from_numpy(np.nan_to_num(data.atr)), config.trading).float()
        benchmark = benchmark_exposure(data.close, data.symbol_id, config.policy, config.trading)
        self.benchmark = torch.from_numpy(benchmark).float()
        bar_return = np.zeros(len(data))
        bar_return[:-1] = data.close[1:] / data.close[:-1] - 1  # close[t] -> close[t+1]
        self.bar_return = torch.from_numpy(bar_return)
        self.stop_atr, self.target_atr = exit_levels(config.trading)
        self.shaper = RewardShaper(config, n_envs)
        self.held = torch.zeros(n_envs)
        self.benchmark_held = torch.zeros(n_envs)
        self.active = torch.zeros(n_envs)

    @property
    def rows(self) -> np.ndarray:
        """[N] the decision bar of each episode."""
        return self.vec.rows

    @property
    def held_tilt(self) -> torch.Tensor:
        """[N] the tilt each episode holds: (exposure held − benchmark) / max_tilt."""
        rows = torch.from_numpy(self.vec.rows.copy())
        return (self.held - self.benchmark[rows]) / self.policy.max_tilt

    def reset(self, start_rows: np.ndarray | None = None) -> None:
        self.vec.reset(start_rows)
        self.twin.reset(self.vec.rows.copy())
        self.held.zero_()
        self.benchmark_held.zero_()
        self.shaper.reset(torch.ones(self.n_envs, dtype=torch.bool))

    def windows(self, rows: np.ndarray | torch.Tensor) -> MarketInputs:
        """Feature windows ending at ``rows`` (decision bars: full windows of their own symbol)."""
        rows = torch.as_tensor(rows).reshape(-1)
        return MarketInputs(gather_windows(self.strategic, rows), gather_windows(self.tactical, rows))

    def step(self, tilt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Execute ``tilt`` [N] (clamped to [−1, 1]); returns rewards, done flags and net returns."""
        rows_now = self.vec.rows.copy()
        rows = torch.from_numpy(rows_now)
        benchmark, cap = self.benchmark[rows], self.cap[rows]
        target = policy_target(tilt.detach().float().clamp(-1.0, 1.0), benchmark, cap, self.policy)
        position = next_position(target, self.held, self.band)
        net, done = self._execute(self.vec, position, self.held)
        benchmark_target = policy_target(torch.zeros_like(target), benchmark, cap, self.policy)
        benchmark_position = next_position(benchmark_target, self.benchmark_held, self.band)
        benchmark_net, _ = self._execute(self.twin, benchmark_position, self.benchmark_held)
        active = net - benchmark_net
        self.active = active.float()  # the step's active net return of each episode
        reward = self.shaper(active, (position - self.held).double(), self.bar_return[rows], done)
        self.held = self._held_after(self.vec, position, done)
        self.benchmark_held = self._held_after(self.twin, benchmark_position, done)
        if done.any():  # the benchmark's twin restarts where each episode restarted
            restarted = np.flatnonzero(done.numpy())
            self.twin.start_episodes(restarted, self.vec.rows[restarted])
        return reward, done, net.float()

    def _execute(
        self, env: VectorTradingEnv, position: torch.Tensor, held: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        action = action_of(position, held)
        stop = np.full(self.n_envs, self.stop_atr)
        level = np.full(self.n_envs, self.target_atr)
        _, net, done = env.step(action.numpy(), position.abs().numpy(), stop, level)
        return torch.from_numpy(net), torch.from_numpy(done)

    @staticmethod
    def _held_after(env: VectorTradingEnv, position: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """The exposure an episode holds next: flat after a restart, a stop or a target."""
        flat = torch.from_numpy(env.states["shares"] == 0.0)
        return torch.where(done | flat, torch.zeros_like(position), position)

    def state_dict(self) -> dict:
        shaper = {k: v.clone() for k, v in vars(self.shaper).items() if isinstance(v, torch.Tensor)}
        vec = self.vec.state_dict()
        vec = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in vec.items()}
        twin = {
            k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in self.twin.state_dict().items()
        }
        return {
            "vec": vec,
            "twin": twin,
            "held": self.held.clone(),
            "benchmark_held": self.benchmark_held.clone(),
            "shaper": shaper,
        }

    def load_state_dict(self, state: dict) -> None:
        vec = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state["vec"].items()}
        self.vec.load_state_dict(vec)
        self.twin.load_state_dict(
            {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state["twin"].items()}
        )
        self.held = state["held"].clone()
        self.benchmark_held = state["benchmark_held"].clone()
        for name, value in state["shaper"].items():
            setattr(self.shaper, name, value.clone())
