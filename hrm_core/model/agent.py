"""Streaming decisions, one bar at a time: the seed's ``HRMTradingEnv.step`` loop.

The agent keeps the strategic state z_H across bars and refreshes it (H updates inside the
segments) only every ``h_update_interval`` bars; in between, segments update L alone against the
kept z_H, which is what makes per-bar decisions cheap. L starts from its initial state each bar
(its window has moved by one bar, so old token states would sit on the wrong bars). Segments run
until the Q head halts (ACT) or the budget is spent; the decision reports how many were used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm_core.model.act import run_segments
from hrm_core.model.heads import ACTIONS, BUY_LONG, HOLD, SELL_SHORT, TradingOutputs
from hrm_core.model.hrm import Carry, HRMTrader, MarketInputs


@dataclass
class Decision:
    """The extracted action for each sample of one bar, and the full head outputs."""

    action: list[str]
    action_index: torch.Tensor  # [B]
    new_position: torch.Tensor  # [B] signed position after the fill
    segments: torch.Tensor  # [B] ACT segments used
    outputs: TradingOutputs


def position_after(action: torch.Tensor, quantity: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """Signed position after an action: BUY_LONG +quantity, SELL_SHORT −quantity, CLOSE_* 0, HOLD held."""
    zero = torch.zeros_like(held)
    return torch.where(
        action == BUY_LONG,
        quantity,
        torch.where(action == SELL_SHORT, -quantity, torch.where(action == HOLD, held, zero)),
    )


class HRMTradingAgent:
    def __init__(self, model: HRMTrader, segments: int, act: bool, h_update_interval: int) -> None:
        self.model = model
        self.segments = segments
        self.act = act
        self.h_update_interval = h_update_interval
        self.reset()

    def reset(self) -> None:
        """Forget the carried strategic state (a new episode)."""
        self.bar = 0
        self.z_H: torch.Tensor | None = None

    @torch.inference_mode()
    def decide(self, inputs: MarketInputs) -> Decision:
        """One decision per sample for the current bar (deterministic: no exploration)."""
        batch = inputs.position.shape[0]
        refresh = self.z_H is None or self.bar % self.h_update_interval == 0
        carry = self.model.initial_carry(batch)  # a refresh starts H afresh, as in training
        if not refresh:
            carry = Carry(z_H=self.z_H, z_L=carry.z_L)
        run = run_segments(self.model, inputs, self.segments, self.act, carry=carry, update_H=refresh)
        self.z_H = run.carry.z_H
        self.bar += 1
        out = run.final
        action = out.action()
        return Decision(
            action=[ACTIONS[i] for i in action.tolist()],
            action_index=action,
            new_position=position_after(action, out.quantity, inputs.position),
            segments=run.steps,
            outputs=out,
        )
