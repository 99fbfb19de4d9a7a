"""Streaming decisions, one bar at a time: the seed's ``HRMTradingEnv.step`` loop.

Each bar the agent runs the model's segments on the bar's windows until the Q head halts (ACT) or
the budget is spent, turns the signal into a target exposure and, through the no-trade band, into
the position and the seed's action (``exposure.py``). With ``h_update_interval`` 1 (the default)
this is exactly the decision the batch model makes on the same bar, which is how it was trained.
A larger interval keeps z_H across bars and refreshes it only every that many bars (segments in
between update L alone): cheaper, but a mode the trainer never saw, so it is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm_core.config import HRMConfig
from hrm_core.model.act import run_segments
from hrm_core.model.exposure import action_of, next_position
from hrm_core.model.heads import TradingOutputs
from hrm_core.model.trader import Carry, MarketInputs, TraderBase


@dataclass
class Decision:
    """The decision for each sample of one bar, and the full head outputs."""

    action_index: torch.Tensor  # [B] into ACTIONS
    target: torch.Tensor  # [B] target exposure (signal × cap)
    position: torch.Tensor  # [B] exposure after the band: what the engine is asked to hold
    confidence: torch.Tensor  # [B]
    segments: torch.Tensor  # [B] ACT segments used
    outputs: TradingOutputs


def model_segments(model: TraderBase, config: HRMConfig, act: bool) -> tuple[int, bool]:
    """Segment budget and whether ACT halts, as the model was trained: the HRM's ACT budget or its
    deep-supervision segments; a baseline's single pass (further passes would repeat it)."""
    if not model.recurrent:
        return 1, False
    return (config.model.halt_max_steps, True) if act else (config.training.deep_supervision_segments, False)


class HRMTradingAgent:
    def __init__(self, model: TraderBase, config: HRMConfig, act: bool) -> None:
        self.model = model
        self.segments, self.act = model_segments(model, config, act)
        self.band = config.trading.no_trade_band
        self.h_update_interval = config.model.h_update_interval
        self.reset()

    def reset(self) -> None:
        """Forget the carried strategic state (a new episode)."""
        self.bar = 0
        self.z_H: torch.Tensor | None = None

    @torch.inference_mode()
    def decide(self, inputs: MarketInputs, cap: torch.Tensor, held: torch.Tensor) -> Decision:
        """One decision per sample for the current bar (deterministic: no exploration), given the
        sizing cap and the exposure held (the previous decision's position)."""
        refresh = self.z_H is None or self.bar % self.h_update_interval == 0
        carry = self.model.initial_carry(inputs.batch)  # a refresh starts H afresh, as in training
        if not refresh:
            carry = Carry(z_H=self.z_H, z_L=carry.z_L)
        run = run_segments(self.model, inputs, self.segments, self.act, carry=carry, update_H=refresh)
        self.z_H = run.carry.z_H
        self.bar += 1
        out = run.final
        target = out.signal * cap
        position = next_position(target, held, self.band)
        return Decision(
            action_index=action_of(position, held),
            target=target,
            position=position,
            confidence=out.confidence(position),
            segments=run.steps,
            outputs=out,
        )
