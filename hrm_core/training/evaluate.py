"""Out-of-sample rollouts: the streaming agent trades each symbol bar by bar through a fold part,
net of commission and slippage, beside buy-and-hold on the same bars.

This is the training-side check (used for early-stopping diagnostics and the learnability
evidence); the full execution model with intrabar stops and targets is the backtester's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hrm_core.config import HRMConfig
from hrm_core.model.agent import HRMTradingAgent
from hrm_core.model.hrm import HRMTrader
from hrm_core.training.data import MarketData, WindowSampler


@dataclass
class Rollout:
    net_returns: np.ndarray  # per decision, all symbols concatenated
    positions: np.ndarray
    segments: np.ndarray
    buy_and_hold: np.ndarray  # next-bar returns of holding 1 unit on the same bars

    def sharpe(self, periods_per_year: float) -> float:
        return annualised_sharpe(self.net_returns, periods_per_year)


def annualised_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    std = returns.std(ddof=1) if len(returns) > 1 else 0.0
    return float(returns.mean() / std * np.sqrt(periods_per_year)) if std > 0 else 0.0


@torch.no_grad()
def rollout(model: HRMTrader, data: MarketData, part: str, config: HRMConfig, act: bool) -> Rollout:
    """Trade every symbol through ``part`` with the agent; the account state is the real one."""
    model.eval()
    device = next(model.parameters()).device
    sampler = WindowSampler(data, config, device)
    segments = config.model.halt_max_steps if act else config.training.deep_supervision_segments
    agent = HRMTradingAgent(model, segments, act, config.model.h_update_interval)
    cost_rate = config.trading.commission + config.trading.slippage
    rows_all = data.decision_rows(part, config.hierarchical_features.high_level_lookback)
    next_return = np.nan_to_num(data.next_returns())
    net, positions, used, hold = [], [], [], []
    for symbol in np.unique(data.symbol_id[rows_all]):
        agent.reset()
        held = torch.zeros(1, dtype=torch.float64, device=device)
        entry = torch.zeros(1, dtype=torch.float64, device=device)
        for t in rows_all[data.symbol_id[rows_all] == symbol]:
            row = torch.tensor([t], device=device)
            decision = agent.decide(sampler.windows(row, held, entry))
            new = decision.new_position.double()
            if bool((torch.sign(new) != torch.sign(held)).any()) and bool((new != 0).any()):
                entry = torch.tensor([data.open[t + 1]], dtype=torch.float64, device=device)
            net.append(float(new * next_return[t] - cost_rate * (new - held).abs()))
            positions.append(float(new))
            used.append(int(decision.segments))
            hold.append(next_return[t])
            held = new
    return Rollout(np.array(net), np.array(positions), np.array(used), np.array(hold))
