"""The flat baseline: the same inputs, blocks and heads as the HRM, with its H_layers + L_layers
blocks stacked into one transformer run once over the H and L tokens together — no recurrence,
no cycles. Same parameter count, so "is the hierarchy worth it" is answered like for like."""

from __future__ import annotations

import torch

from hrm_core.core.config import ModelConfig
from hrm_core.model.heads import TradingOutputs
from hrm_core.model.layers import ReasoningModule
from hrm_core.model.trader import Carry, MarketInputs, TraderBase, TraderShape


class FlatTrader(TraderBase):
    def __init__(self, model: ModelConfig, shape: TraderShape) -> None:
        super().__init__(model, shape)
        self.stack = ReasoningModule(
            model.H_layers + model.L_layers,
            model.hidden_size,
            model.num_heads,
            model.expansion,
            self.h_tokens + shape.low_level_lookback,
        )

    def segment(
        self, carry: Carry, inputs: MarketInputs, update_H: bool = True
    ) -> tuple[Carry, TradingOutputs]:
        """One pass over [H tokens; L tokens]; the carry passes through unchanged."""
        x_H, x_L = self.embed(inputs)
        tokens = torch.cat([x_H, x_L], dim=1)  # [B, H tokens + L bars, D]
        z = self.stack(tokens, torch.zeros_like(tokens))
        return carry, self.decide(z[:, : self.h_tokens], z[:, self.h_tokens :])
