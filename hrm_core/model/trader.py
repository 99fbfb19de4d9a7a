"""What every trading model shares: the input embeddings, the recurrent carry, the decision summary
and the heads. A core (HRM, flat transformer, GRU) only defines ``segment``, so baselines differ
from the HRM in exactly one place and are compared like for like."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from hrm_core.core.config import ModelConfig
from hrm_core.model.heads import TradingHeads, TradingOutputs


@dataclass
class Carry:
    """Recurrent state between segments (and, in the agent, between bars)."""

    z_H: torch.Tensor  # [B, H tokens, D]
    z_L: torch.Tensor  # [B, L tokens, D]


@dataclass
class MarketInputs:
    """One decision per sample: the feature windows ending at the decision bar. The model reads no
    account state: the position follows from its target exposure and the no-trade band
    (``exposure.py``), so training, backtests and serving see the same inputs."""

    strategic: torch.Tensor  # [B, high_level_lookback, strategic features]
    tactical: torch.Tensor  # [B, low_level_lookback, tactical features]

    @property
    def batch(self) -> int:
        return self.strategic.shape[0]


@dataclass(frozen=True)
class TraderShape:
    """What a trader reads: features per level and the two windows' lengths in bars."""

    n_strategic: int
    n_tactical: int
    high_level_lookback: int
    low_level_lookback: int


class TraderBase(nn.Module, ABC):
    """Embeddings, carry, summary and heads. ``feature_names`` (strategic, tactical) records what the
    model was trained on, so data with other features is refused."""

    feature_names: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def __init__(self, model: ModelConfig, shape: TraderShape) -> None:
        super().__init__()
        hidden = model.hidden_size
        self.config, self.shape = model, shape
        self.H_cycles, self.L_cycles = model.H_cycles, model.L_cycles
        self.h_pool = model.h_pool
        self.h_tokens = math.ceil(shape.high_level_lookback / model.h_pool)
        self.embed_H = nn.Linear(model.h_pool * shape.n_strategic, hidden, bias=False)
        self.embed_L = nn.Linear(shape.n_tactical, hidden, bias=False)
        self.heads = TradingHeads(2 * hidden, hidden)
        self.register_buffer("H_init", nn.init.trunc_normal_(torch.empty(hidden), std=1.0, a=-2.0, b=2.0))
        self.register_buffer("L_init", nn.init.trunc_normal_(torch.empty(hidden), std=1.0, a=-2.0, b=2.0))

    @property
    def n_strategic(self) -> int:
        return self.shape.n_strategic

    @property
    def n_tactical(self) -> int:
        return self.shape.n_tactical

    @property
    def high_level_lookback(self) -> int:
        return self.shape.high_level_lookback

    @property
    def low_level_lookback(self) -> int:
        return self.shape.low_level_lookback

    @property
    def recurrent(self) -> bool:
        """Whether more segments can change a decision (only the HRM refines its carry)."""
        return False

    def set_cycles(self, H_cycles: int, L_cycles: int) -> None:
        """Curriculum stages change the cycle counts of the same weights."""
        self.H_cycles, self.L_cycles = H_cycles, L_cycles

    def embed(self, inputs: MarketInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """x_H [B, H tokens, D] from strategic bars pooled ``h_pool`` to a token; x_L [B, L bars, D]."""
        strategic = inputs.strategic
        batch, bars, features = strategic.shape
        pad = self.h_tokens * self.h_pool - bars
        if pad:  # pad the oldest end so the newest bar closes the last token
            strategic = torch.cat([strategic.new_zeros(batch, pad, features), strategic], dim=1)
        x_H = self.embed_H(strategic.reshape(batch, self.h_tokens, self.h_pool * features))
        return x_H, self.embed_L(inputs.tactical)

    def decide(self, z_H: torch.Tensor, z_L: torch.Tensor) -> TradingOutputs:
        """The heads on the last L token and the mean H state."""
        h_summary = z_H.mean(1)
        return self.heads(torch.cat([z_L[:, -1], h_summary], dim=-1), h_summary)

    def initial_carry(self, batch: int) -> Carry:
        return Carry(
            z_H=self.H_init.expand(batch, self.h_tokens, -1).clone(),
            z_L=self.L_init.expand(batch, self.low_level_lookback, -1).clone(),
        )

    @abstractmethod
    def segment(
        self, carry: Carry, inputs: MarketInputs, update_H: bool = True
    ) -> tuple[Carry, TradingOutputs]:
        """One refinement step from ``carry``: the detached carry and the decision (each core's own)."""
