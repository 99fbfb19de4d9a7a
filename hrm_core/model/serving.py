"""The model as a served decision: fresh feature windows and account state in, one tensor of the
seed's outputs out, with ACT halting done by masks (no data-dependent Python control flow). This is
the form ``torch.export`` traces, so the registry stores a pickle-free ``pt2`` program that loads
without this project's classes."""

from __future__ import annotations

import torch
from torch import nn

from hrm_core.model.act import run_segments
from hrm_core.model.hrm import HRMTrader, MarketInputs

OUTPUT_COLUMNS = (
    "action",
    "quantity",
    "confidence",
    "stop_loss",
    "take_profit",
    "position_risk",
    "market_risk",
    "execution_risk",
    "regime_trending",
    "regime_ranging",
    "regime_volatile",
    "segments",
)


class ServingTrader(nn.Module):
    def __init__(self, model: HRMTrader, segments: int, act: bool) -> None:
        super().__init__()
        self.model = model.eval()
        self.segments = segments
        self.act = act

    def forward(
        self, strategic: torch.Tensor, tactical: torch.Tensor, account: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """strategic [B, high, Fs], tactical [B, low, Ft], account [B, 7], position [B] (signed)
        -> [B, len(OUTPUT_COLUMNS)]; ``action`` indexes ``heads.ACTIONS``."""
        inputs = MarketInputs(strategic=strategic, tactical=tactical, account=account, position=position)
        run = run_segments(self.model, inputs, self.segments, self.act, stop_when_all_halted=False)
        out = run.final
        columns = [
            out.action().float(),
            out.quantity,
            out.confidence,
            out.stop_loss,
            out.take_profit,
            out.position_risk,
            out.market_risk,
            out.execution_risk,
            *out.regime_probs.unbind(-1),
            run.steps.float(),
        ]
        return torch.stack(columns, dim=-1)
