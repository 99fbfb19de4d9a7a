"""Output heads (f_O): the seed's trading decision, risk estimates, regime and ACT Q values.

Actions and masks: flat → BUY_LONG, SELL_SHORT or HOLD; long → CLOSE_LONG or HOLD; short →
CLOSE_SHORT or HOLD. The position an action leads to: BUY_LONG → +quantity, SELL_SHORT →
−quantity, CLOSE_* → 0, HOLD → unchanged. Stops and targets are ATR multiples centred on the
config's ``risk_multiplier`` / ``reward_multiplier`` (a head output of 0 gives exactly those).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

ACTIONS = ("BUY_LONG", "SELL_SHORT", "CLOSE_LONG", "CLOSE_SHORT", "HOLD")
BUY_LONG, SELL_SHORT, CLOSE_LONG, CLOSE_SHORT, HOLD = range(len(ACTIONS))
REGIMES = ("trending", "ranging", "volatile")


def action_mask(position: torch.Tensor) -> torch.Tensor:
    """[..., 5] True where the action is valid for the current signed position."""
    flat, long, short = position == 0, position > 0, position < 0
    return torch.stack([flat, flat, long, short, torch.ones_like(flat)], dim=-1)


@dataclass
class TradingOutputs:
    """One decision per sample; every field is [B] unless noted."""

    action_logits: torch.Tensor  # [B, 5], invalid actions at -inf
    quantity: torch.Tensor  # fraction of capital in [0, max_position_size]
    confidence: torch.Tensor  # [0, 1]
    stop_loss: torch.Tensor  # ATR multiples below (long) / above (short) the entry
    take_profit: torch.Tensor  # ATR multiples
    position_risk: torch.Tensor  # [0, 1]
    market_risk: torch.Tensor  # [0, 1]
    execution_risk: torch.Tensor  # [0, 1]
    regime_probs: torch.Tensor  # [B, 3] trending / ranging / volatile
    q_halt: torch.Tensor  # ACT logits
    q_continue: torch.Tensor

    def target_position(self, position: torch.Tensor) -> torch.Tensor:
        """Expected signed position after the decision, differentiable in the action probabilities."""
        probs = self.action_logits.softmax(-1)
        return (probs[:, BUY_LONG] - probs[:, SELL_SHORT]) * self.quantity + probs[:, HOLD] * position

    def action(self) -> torch.Tensor:
        """The most likely valid action per sample."""
        return self.action_logits.argmax(-1)

    def detach(self) -> TradingOutputs:
        return TradingOutputs(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def select(self, keep: torch.Tensor, other: TradingOutputs) -> TradingOutputs:
        """Per sample, this output where ``keep`` and ``other`` elsewhere."""
        merged = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            mask = keep.view(-1, *([1] * (mine.dim() - 1)))
            merged[f.name] = torch.where(mask, mine, theirs)
        return TradingOutputs(**merged)


class TradingHeads(nn.Module):
    """Linear heads on the decision summary [B, features] (last L token and mean H state)."""

    def __init__(
        self,
        features: int,
        hidden_size: int,
        risk_multiplier: float,
        reward_multiplier: float,
        max_position_size: float,
    ) -> None:
        super().__init__()
        self.risk_multiplier = risk_multiplier
        self.reward_multiplier = reward_multiplier
        self.max_position_size = max_position_size
        self.action = nn.Linear(features, len(ACTIONS))
        self.scalars = nn.Linear(features, 7)  # quantity, confidence, stop, target, 3 risks
        self.regime = nn.Linear(hidden_size, len(REGIMES))
        self.q = nn.Linear(features, 2)
        with torch.no_grad():  # the reference's ACT init: never halt early until it has learned to
            self.q.weight.zero_()
            self.q.bias.fill_(-5.0)

    def forward(
        self, summary: torch.Tensor, h_summary: torch.Tensor, position: torch.Tensor
    ) -> TradingOutputs:
        logits = self.action(summary).float().masked_fill(~action_mask(position), float("-inf"))
        raw = self.scalars(summary).float()
        q = self.q(summary).float()
        return TradingOutputs(
            action_logits=logits,
            quantity=torch.sigmoid(raw[:, 0]) * self.max_position_size,
            confidence=torch.sigmoid(raw[:, 1]),
            stop_loss=self.risk_multiplier * 2 * torch.sigmoid(raw[:, 2]),
            take_profit=self.reward_multiplier * 2 * torch.sigmoid(raw[:, 3]),
            position_risk=torch.sigmoid(raw[:, 4]),
            market_risk=torch.sigmoid(raw[:, 5]),
            execution_risk=torch.sigmoid(raw[:, 6]),
            regime_probs=self.regime(h_summary).float().softmax(-1),
            q_halt=q[:, 0],
            q_continue=q[:, 1],
        )
