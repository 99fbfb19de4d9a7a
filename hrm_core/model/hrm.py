"""The HRM for trading: H (strategic, slow) and L (tactical, fast) recurrent modules.

One *segment* is a forward of nested cycles. For each of ``H_cycles`` H updates, L is updated
``L_cycles`` times from ``z_L + z_H + x_L`` (input injection); then H is updated from
``z_H + z_L + x_H``. The windows differ in length (L: ``low_level_lookback`` bars; H:
``high_level_lookback`` bars pooled ``h_pool`` to a token), so each module receives the other's
mean state, broadcast over its tokens. Gradient (``model.gradient``): ``one_step`` runs everything
but the last L and the last H update under ``no_grad`` (the paper's O(1)-memory approximation);
``last_cycle`` backpropagates through the whole last H cycle; ``full`` through every cycle.
The carry leaves a segment detached, and starts from fixed initial states saved with the model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from hrm_core.core.config import ModelConfig
from hrm_core.model.heads import TradingOutputs
from hrm_core.model.layers import ReasoningModule
from hrm_core.model.trader import Carry, MarketInputs, TraderBase, TraderShape


def keep_grad(grad: bool, keep: bool) -> AbstractContextManager:
    """``set_grad_enabled(keep)`` while gradients are on; no switch at all when they are off, so
    inference pays for no grad-mode changes (and a ``torch.export`` trace records none: the exporter
    splits its graph at each one)."""
    return torch.set_grad_enabled(keep) if grad else nullcontext()


def reasoning_modules(model: ModelConfig, h_tokens: int, low_level_lookback: int) -> tuple:
    """The H and L modules of an HRM of this size (the baselines count their parameters)."""
    H = ReasoningModule(model.H_layers, model.hidden_size, model.num_heads, model.expansion, h_tokens)
    L = ReasoningModule(
        model.L_layers, model.hidden_size, model.num_heads, model.expansion, low_level_lookback
    )
    return H, L


class HRMTrader(TraderBase):
    """The hierarchical core on the shared embeddings and heads; ``segment`` is one ACT step."""

    def __init__(self, model: ModelConfig, shape: TraderShape) -> None:
        super().__init__(model, shape)
        self.H, self.L = reasoning_modules(model, self.h_tokens, shape.low_level_lookback)

    @property
    def recurrent(self) -> bool:
        return True

    def reset(self, carry: Carry, mask: torch.Tensor) -> Carry:
        """Initial states where ``mask`` [B] is True (halted samples start a new decision)."""
        fresh = self.initial_carry(mask.shape[0])
        keep = mask.view(-1, 1, 1)
        return Carry(torch.where(keep, fresh.z_H, carry.z_H), torch.where(keep, fresh.z_L, carry.z_L))

    def segment(
        self, carry: Carry, inputs: MarketInputs, update_H: bool = True
    ) -> tuple[Carry, TradingOutputs]:
        """One segment of nested cycles from ``carry``; ``update_H=False`` keeps z_H fixed and runs a
        single cycle of L updates against it (the streaming agent between H refreshes: with no H
        update in between, further cycles would only repeat L). Returns the detached carry and the
        decision."""
        x_H, x_L = self.embed(inputs)
        z_H, z_L = carry.z_H, carry.z_L
        grad = torch.is_grad_enabled()
        mode = self.config.gradient
        H_cycles = self.H_cycles if update_H else 1  # with z_H fixed, one cycle of L updates
        for h in range(H_cycles):
            last_h = h == H_cycles - 1
            cycle_grad = mode == "full" or (mode == "last_cycle" and last_h)
            for step in range(self.L_cycles):
                last_l = last_h and step == self.L_cycles - 1
                with keep_grad(grad, cycle_grad or last_l):
                    z_L = self.L(z_L, x_L + z_H.mean(1, keepdim=True))
            if update_H:
                with keep_grad(grad, cycle_grad or last_h):
                    z_H = self.H(z_H, x_H + z_L.mean(1, keepdim=True))
        return Carry(z_H.detach(), z_L.detach()), self.decide(z_H, z_L)
