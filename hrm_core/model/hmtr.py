"""The H-MTR (hierarchical multi-task) trader: a master over one worker per task, all on a shared
recurrent backbone (the HRM's H and L modules, or the GRU baseline's recurrence).

- Worker k reads the backbone's tactical state (the last L token) and proposes a tilt logit
  s_k = w_k · z_L: its own tilt from the benchmark, before the bounding tanh (``exposure.py``).
- The master reads the strategic state (mean z_H) and outputs a weighting over workers,
  softmax(logits), and a risk budget b = sigmoid(·) in (0, 1) that scales the tilt.
- The executed tilt logit is b · Σ_k weight_k · s_k. It replaces the supervised tilt head in
  ``TradingOutputs``, so the backtester, the environments, the agent and serving execute exactly
  what the master and workers decide; the outcome and Q heads are the backbone's own.

The master acts on z_H, which the streaming agent refreshes every ``h_update_interval`` bars
(``model/agent.py``): between refreshes its weighting and budget stay fixed while L and the workers
follow every bar. ``active_worker`` routes the tilt to one worker alone (its pre-training on its
task, ``rl/hmtr.py``). Worker k is task ``TASKS[k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hrm_core.core.config import ModelConfig
from hrm_core.core.vocabulary import TASKS
from hrm_core.model.gru import GRUTrader
from hrm_core.model.heads import TradingOutputs
from hrm_core.model.hrm import HRMTrader
from hrm_core.model.trader import TraderShape


@dataclass
class Routing:
    """The master's decision and the workers' proposals for each sample."""

    weights: torch.Tensor  # [B, workers], sums to 1
    budget: torch.Tensor  # [B] in (0, 1)
    signals: torch.Tensor  # [B, workers] tilt logits


class MasterWorkers(nn.Module):
    """Worker tilt heads on z_L, the master's weighting and budget heads on z_H."""

    def __init__(self, hidden: int, workers: int = len(TASKS)) -> None:
        super().__init__()
        self.workers = nn.Linear(hidden, workers)
        self.master = nn.Linear(hidden, workers)
        self.budget = nn.Linear(hidden, 1)
        with torch.no_grad():  # workers start at the benchmark, the master even-handed at half budget
            self.workers.weight.zero_()
            self.workers.bias.zero_()
            self.master.weight.zero_()
            self.master.bias.zero_()
            self.budget.weight.zero_()
            self.budget.bias.zero_()

    def forward(self, z_H: torch.Tensor, z_L: torch.Tensor) -> Routing:
        strategic = z_H.mean(1)  # [B, D]
        return Routing(
            weights=self.master(strategic).float().softmax(-1),
            budget=torch.sigmoid(self.budget(strategic).float()[:, 0]),
            signals=self.workers(z_L[:, -1]).float(),
        )


class _MasterWorkerTrader:
    """Mixed into a backbone trader: ``decide`` routes the tilt through master and workers."""

    active_worker: int | None = None

    def _add_master_workers(self, model: ModelConfig) -> None:
        self.route = MasterWorkers(model.hidden_size)

    def decide(self, z_H: torch.Tensor, z_L: torch.Tensor) -> TradingOutputs:
        out = super().decide(z_H, z_L)
        routing = self.route(z_H, z_L)
        if self.active_worker is None:
            out.tilt_logit = routing.budget * (routing.weights * routing.signals).sum(-1)
        else:
            out.tilt_logit = routing.signals[:, self.active_worker]
        return out

    def routing(self, inputs) -> Routing:
        """The master's weights and budget and the workers' tilt logits on ``inputs`` (one segment)."""
        carry, _ = self.segment(self.initial_carry(inputs.batch), inputs)
        return self.route(carry.z_H, carry.z_L)


class HMTRTrader(_MasterWorkerTrader, HRMTrader):
    """H-MTR on the HRM backbone (the default)."""

    def __init__(self, model: ModelConfig, shape: TraderShape) -> None:
        super().__init__(model, shape)
        self._add_master_workers(model)


class HMTRGRUTrader(_MasterWorkerTrader, GRUTrader):
    """H-MTR on the GRU backbone (the option)."""

    def __init__(self, model: ModelConfig, shape: TraderShape) -> None:
        super().__init__(model, shape)
        self._add_master_workers(model)
