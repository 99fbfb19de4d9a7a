"""The recurrent baseline: the same embeddings and heads as the HRM, with its H and L modules
replaced by a GRU that reads the H tokens then the L bars in time order — a single recurrence with
no hierarchy and no cycles. Its layer count is the one whose parameters come closest to the HRM
modules it replaces, so the comparison is at about equal size."""

from __future__ import annotations

import torch
from torch import nn

from hrm_core.core.config import ModelConfig
from hrm_core.model.heads import TradingOutputs
from hrm_core.model.hrm import reasoning_modules
from hrm_core.model.trader import Carry, MarketInputs, TraderBase, TraderShape


def gru_layers(target_params: int, hidden: int) -> int:
    """GRU layers (input and hidden size ``hidden``) whose parameter count is nearest ``target_params``."""
    per_layer = 6 * hidden * hidden + 6 * hidden  # W_ih, W_hh [3D, D] and two [3D] biases
    return max(1, round(target_params / per_layer))


class GRUTrader(TraderBase):
    def __init__(self, model: ModelConfig, shape: TraderShape) -> None:
        super().__init__(model, shape)
        replaced = sum(
            p.numel()
            for module in reasoning_modules(model, self.h_tokens, shape.low_level_lookback)
            for p in module.parameters()
        )
        hidden = model.hidden_size
        self.gru = nn.GRU(hidden, hidden, gru_layers(replaced, hidden), batch_first=True)

    def segment(
        self, carry: Carry, inputs: MarketInputs, update_H: bool = True
    ) -> tuple[Carry, TradingOutputs]:
        """One pass of the GRU over [H tokens; L bars]; the carry passes through unchanged."""
        x_H, x_L = self.embed(inputs)
        z, _ = self.gru(torch.cat([x_H, x_L], dim=1))  # [B, H tokens + L bars, D]
        return carry, self.decide(z[:, : self.h_tokens], z)
