"""Output heads (f_O): the tilt from the benchmark, the outcome heads and the ACT Q values.

Every output is trained (``training/losses.py``):
- ``tilt_logit``: the market's part of the tilt; the tilt itself also reads the tilt held
  (``hold`` weight) and the deployment ``tilt_gate`` (``exposure.policy_tilt``), and the target
  exposure is the benchmark plus ``max_tilt`` × tilt. Trained by the active trading loss through
  the executed path. The head starts at zero, so an untrained model holds the benchmark;
- ``up_logit``: P(the next ``outcome_horizon`` bars' return from the next open is positive),
  trained by cross-entropy; served as the confidence of the decision's direction;
- ``log_volatility``: the log of the realised annualised volatility over those bars (market risk),
  trained by squared error;
- ``regime_logits``: trending / ranging / volatile, read off the realised path (labels may look
  ahead; features never), trained by cross-entropy from H's state;
- ``q_halt`` / ``q_continue``: ACT, trained by the Q loss.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from hrm_core.core.vocabulary import REGIMES
from hrm_core.model.exposure import direction_confidence


@dataclass
class TradingOutputs:
    """One decision per sample; every field is [B] unless noted."""

    tilt_logit: torch.Tensor  # the tilt before the held tilt and the gate (``exposure.policy_tilt``)
    up_logit: torch.Tensor
    log_volatility: torch.Tensor
    regime_logits: torch.Tensor  # [B, len(REGIMES)]
    q_halt: torch.Tensor  # ACT logits
    q_continue: torch.Tensor

    @property
    def p_up(self) -> torch.Tensor:
        return torch.sigmoid(self.up_logit)

    @property
    def market_risk(self) -> torch.Tensor:
        """Predicted annualised volatility over the outcome horizon."""
        return self.log_volatility.exp()

    @property
    def regime_probs(self) -> torch.Tensor:
        return self.regime_logits.softmax(-1)

    def confidence(self, position: torch.Tensor) -> torch.Tensor:
        """P(the market moves the decided position's way) (``exposure.direction_confidence``)."""
        return direction_confidence(position, self.p_up)

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
    """Linear heads on the decision summary [B, features] (last L token and mean H state); the
    regime head reads H's state alone, since regimes are H's job."""

    def __init__(self, features: int, hidden_size: int) -> None:
        super().__init__()
        self.tilt = nn.Linear(features, 1)
        self.hold = nn.Parameter(torch.zeros(()))  # weight of the tilt held in the next tilt
        self.register_buffer(
            "tilt_gate", torch.ones(())
        )  # 0: validation showed no skill; trade the benchmark
        self.outcome = nn.Linear(features, 2)  # up logit, log volatility
        self.regime = nn.Linear(hidden_size, len(REGIMES))
        self.q = nn.Linear(features, 2)
        with torch.no_grad():  # start at the benchmark, and never halt early until the Q head has learned to
            self.tilt.weight.zero_()
            self.tilt.bias.zero_()
            self.outcome.bias[1].fill_(-1.6)  # log(0.2): a typical annualised volatility
            self.q.weight.zero_()
            self.q.bias.fill_(-5.0)

    def set_tilt(self, on: bool) -> None:
        """Switch the tilt on (trade benchmark + tilt) or off (trade the benchmark exactly)."""
        with torch.no_grad():
            self.tilt_gate.fill_(1.0 if on else 0.0)

    def forward(self, summary: torch.Tensor, h_summary: torch.Tensor) -> TradingOutputs:
        # The outcome and regime heads read the backbone without steering it: their losses, of
        # another scale, would pull the shared state away from what the trading loss trains, and
        # the tilt is what is executed. They are trained probes of the state the policy uses.
        outcome = self.outcome(summary.detach()).float()
        q = self.q(summary).float()
        return TradingOutputs(
            tilt_logit=self.tilt(summary).float()[:, 0],
            up_logit=outcome[:, 0],
            log_volatility=outcome[:, 1],
            regime_logits=self.regime(h_summary.detach()).float(),
            q_halt=q[:, 0],
            q_continue=q[:, 1],
        )
