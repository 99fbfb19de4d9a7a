"""The model as a served decision: fresh feature windows, the sizing cap and the exposure held in,
one tensor of the decision out, with ACT halting done by masks (no data-dependent Python control
flow). This is the form ``torch.export`` traces, so the registry stores a pickle-free ``pt2``
program that loads without this project's classes. Every column is a trained output or follows
from one (``heads.py``, ``exposure.py``)."""

from __future__ import annotations

import torch
from torch import nn

from hrm_core.model.act import run_segments
from hrm_core.model.exposure import action_of, next_position
from hrm_core.model.trader import MarketInputs, TraderBase
from hrm_core.vocabulary import REGIMES

OUTPUT_COLUMNS = (
    "action",
    "target_exposure",
    "position",
    "confidence",
    "p_up",
    "market_risk",
    *(f"regime_{name}" for name in REGIMES),
    "segments",
)


class ServingTrader(nn.Module):
    def __init__(self, model: TraderBase, segments: int, act: bool, band: float) -> None:
        super().__init__()
        self.model = model.eval()
        self.segments = segments
        self.act = act
        self.band = band

    def forward(
        self, strategic: torch.Tensor, tactical: torch.Tensor, cap: torch.Tensor, held: torch.Tensor
    ) -> torch.Tensor:
        """strategic [B, high, Fs], tactical [B, low, Ft], cap [B] (sizing cap), held [B] (exposure
        held) -> [B, len(OUTPUT_COLUMNS)]; ``action`` indexes ``vocabulary.ACTIONS``."""
        inputs = MarketInputs(strategic=strategic, tactical=tactical)
        run = run_segments(self.model, inputs, self.segments, self.act, stop_when_all_halted=False)
        out = run.final
        target = out.signal * cap
        position = next_position(target, held, self.band)
        columns = [
            action_of(position, held).float(),
            target,
            position,
            out.confidence(position),
            out.p_up,
            out.market_risk,
            *out.regime_probs.unbind(-1),
            run.steps.float(),
        ]
        return torch.stack(columns, dim=-1)
