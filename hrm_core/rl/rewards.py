"""Rewards for RL, computed per episode from what a step reveals (no look-ahead).

- ``pnl``: the step's net simple return (the engine's equity change: fills, fees, slippage and
  borrow included), × ``reward_scale``.
- ``differential_sharpe`` (Moody & Saffell 1998): the first-order effect of this step's return on
  an exponential moving Sharpe ratio with rate η: D = (B·ΔA − ½·A·ΔB) / (B − A²)^{3/2}, where A and
  B are moving averages of r and r², ΔA = r − A, ΔB = r² − B. Already O(1); not rescaled.
- ``hierarchical`` (the seed's per-module rewards): tactical, every bar, the entry/exit quality of
  the step's position change Δw: Δw × the bar's close-to-close return, less its cost c·|Δw| (a
  good entry or exit earns, a churn pays); strategic, every ``strategic_interval`` bars and at an
  episode's end, the interval's compounded net return less ``drawdown_penalty`` × its maximum
  drawdown. Both × ``reward_scale``.
"""

from __future__ import annotations

import torch

from hrm_core.core.config import HRMConfig

INITIAL_VARIANCE = 1e-4  # (1 % a bar)²: the moving second moment a differential Sharpe starts from


class RewardShaper:
    def __init__(self, config: HRMConfig, n_envs: int) -> None:
        self.rl = config.rl
        self.cost_rate = config.trading.commission + config.trading.slippage
        self.mean = torch.zeros(n_envs, dtype=torch.float64)  # A
        self.second = torch.full((n_envs,), INITIAL_VARIANCE, dtype=torch.float64)  # B
        self.bars = torch.zeros(n_envs, dtype=torch.long)  # bars into the strategic interval
        self.growth = torch.zeros(n_envs, dtype=torch.float64)  # log wealth in the interval
        self.peak = torch.zeros(n_envs, dtype=torch.float64)
        self.drawdown = torch.zeros(n_envs, dtype=torch.float64)

    def reset(self, envs: torch.Tensor) -> None:
        """Start the episodes where ``envs`` [N] bool is True afresh."""
        self.mean[envs], self.second[envs] = 0.0, INITIAL_VARIANCE
        self.bars[envs] = 0
        self.growth[envs], self.peak[envs], self.drawdown[envs] = 0.0, 0.0, 0.0

    def __call__(
        self, net: torch.Tensor, change: torch.Tensor, bar_return: torch.Tensor, done: torch.Tensor
    ) -> torch.Tensor:
        """Rewards [N] for net returns ``net``, position changes ``change`` and the bar's
        close-to-close market returns ``bar_return``; ``done`` ends episodes after this step."""
        kind = self.rl.reward
        if kind == "pnl":
            reward = net * self.rl.reward_scale
        elif kind == "differential_sharpe":
            delta_a, delta_b = net - self.mean, net * net - self.second
            variance = (self.second - self.mean**2).clamp_min(1e-12)
            reward = (self.second * delta_a - 0.5 * self.mean * delta_b) / variance**1.5
            self.mean += self.rl.differential_sharpe_eta * delta_a
            self.second += self.rl.differential_sharpe_eta * delta_b
        else:
            tactical = change * bar_return - self.cost_rate * change.abs()
            self.growth += torch.log1p(net.clamp_min(-0.99))
            self.peak = torch.maximum(self.peak, self.growth)
            self.drawdown = torch.maximum(self.drawdown, self.peak - self.growth)
            self.bars += 1
            closes = (self.bars >= self.rl.strategic_interval) | done
            strategic = torch.expm1(self.growth) - self.rl.drawdown_penalty * self.drawdown
            reward = (tactical + torch.where(closes, strategic, 0.0)) * self.rl.reward_scale
            self.bars[closes] = 0
            self.growth[closes], self.peak[closes], self.drawdown[closes] = 0.0, 0.0, 0.0
        self.reset(done)
        return reward.float()
