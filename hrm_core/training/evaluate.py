"""Out-of-sample rollouts for training-side checks: the model decides every bar of a fold part in
one batch, its tilts read the position held and go through the no-trade band bar by bar as the
engine executes them (``exposure.execute_path``), and the positions run through the engine's torch
twin (``engine.twin``: the backtester's fills, costs and equity); the benchmark policy runs beside
it on the same bars. Exit rules are the backtester's alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData
from hrm_core.dataset.windows import WindowSampler
from hrm_core.engine.twin import run_positions
from hrm_core.model.act import run_segments
from hrm_core.model.agent import model_segments
from hrm_core.model.exposure import execute_path
from hrm_core.model.trader import TraderBase

BATCH_ROWS = 4096


@dataclass
class Rollout:
    net_returns: np.ndarray  # per decision, all symbols concatenated
    positions: np.ndarray
    segments: np.ndarray
    buy_and_hold: np.ndarray  # close-to-close returns of holding 1 unit over the same bars
    benchmark: np.ndarray  # net returns of the benchmark policy on the same bars
    costs: np.ndarray  # every cost the policy paid over each decision's bar, as a fraction of equity

    def sharpe(self, periods_per_year: float) -> float:
        return annualised_sharpe(self.net_returns, periods_per_year)

    def active_sharpe(self, periods_per_year: float) -> float:
        """The Sharpe of the net returns less the benchmark policy's on the same bars."""
        return annualised_sharpe(self.net_returns - self.benchmark, periods_per_year)


def annualised_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    std = returns.std(ddof=1) if len(returns) > 1 else 0.0
    return float(returns.mean() / std * np.sqrt(periods_per_year)) if std > 0 else 0.0


@torch.no_grad()
def rollout(model: TraderBase, data: MarketData, part: str, config: HRMConfig, act: bool) -> Rollout:
    """Trade every symbol through ``part``, starting flat."""
    model.eval()
    device = next(model.parameters()).device
    sampler = WindowSampler(data, config, device)
    segments, halting = model_segments(model, config, act)
    rows_all = data.decision_rows(part, config.hierarchical_features.high_level_lookback)
    net, positions, used, hold, bench, paid = [], [], [], [], [], []
    for symbol in np.unique(data.symbol_id[rows_all]):
        rows = torch.as_tensor(rows_all[data.symbol_id[rows_all] == symbol], device=device)
        logits, steps = [], []
        for batch in rows.split(BATCH_ROWS):
            run = run_segments(model, sampler.windows(batch), segments, halting)
            logits.append(run.final.tilt_logit)
            steps.append(run.steps)
        benchmark, cap = sampler.benchmark[rows][None], sampler.cap[rows][None]
        band, heads = config.trading.no_trade_band, model.heads
        path = (torch.cat(logits)[None], benchmark, cap)
        position = execute_path(*path, heads.hold, heads.tilt_gate, config.policy, band)[2]
        zero = benchmark.new_zeros(())
        benchmark_position = execute_path(*path, zero, zero, config.policy, band)[2]
        bars = torch.cat([rows, rows[-1:] + 1])  # the decisions' bars and the one after the last
        open_, close = sampler.open[bars][None], sampler.close[bars][None]
        own = run_positions(position, open_, close, config.trading)
        net.append(own.returns[0].cpu().numpy())
        bench.append(run_positions(benchmark_position, open_, close, config.trading).returns[0].cpu().numpy())
        paid.append(own.costs[0].cpu().numpy())
        positions.append(position[0].cpu().numpy())
        used.append(torch.cat(steps).cpu().numpy())
        hold.append((close[0, 1:] / close[0, :-1] - 1).cpu().numpy())
    return Rollout(*(np.concatenate(x).astype(float) for x in (net, positions, used, hold, bench, paid)))
