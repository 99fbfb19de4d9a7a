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

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from hrm_core.config import ModelConfig, TradingConfig
from hrm_core.model.account import ACCOUNT_FEATURES
from hrm_core.model.heads import TradingHeads, TradingOutputs
from hrm_core.model.layers import ReasoningModule


@dataclass
class Carry:
    """Recurrent state between segments (and, in the agent, between bars)."""

    z_H: torch.Tensor  # [B, H tokens, D]
    z_L: torch.Tensor  # [B, L tokens, D]


@dataclass
class MarketInputs:
    """One decision per sample: feature windows ending at the decision bar, and the account."""

    strategic: torch.Tensor  # [B, high_level_lookback, strategic features]
    tactical: torch.Tensor  # [B, low_level_lookback, tactical features]
    account: torch.Tensor  # [B, 7] (see account.py)
    position: torch.Tensor  # [B] signed position, for the action mask


def keep_grad(grad: bool, keep: bool) -> AbstractContextManager:
    """``set_grad_enabled(keep)`` while gradients are on; no switch at all when they are off, so an
    inference trace (``torch.export``) records no grad-mode changes. The exporter splits its graph
    at each one: the CPU preset's four segments took 106 s to export with them and 10 s without."""
    return torch.set_grad_enabled(keep) if grad else nullcontext()


class HRMTrader(nn.Module):
    """HRM core plus the trading heads; ``segment`` is one ACT step. ``feature_names`` (strategic,
    tactical) records what the model was trained on, so data with other features is refused."""

    feature_names: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def __init__(
        self,
        model: ModelConfig,
        trading: TradingConfig,
        n_strategic: int,
        n_tactical: int,
        high_level_lookback: int,
        low_level_lookback: int,
    ) -> None:
        super().__init__()
        hidden = model.hidden_size
        self.config = model
        self.H_cycles, self.L_cycles = model.H_cycles, model.L_cycles
        self.h_pool = model.h_pool
        self.h_tokens = math.ceil(high_level_lookback / model.h_pool)
        self.high_level_lookback, self.low_level_lookback = high_level_lookback, low_level_lookback

        self.embed_H = nn.Linear(model.h_pool * n_strategic, hidden, bias=False)
        self.embed_L = nn.Linear(n_tactical + len(ACCOUNT_FEATURES), hidden, bias=False)
        self.H = ReasoningModule(model.H_layers, hidden, model.num_heads, model.expansion, self.h_tokens)
        self.L = ReasoningModule(model.L_layers, hidden, model.num_heads, model.expansion, low_level_lookback)
        self.heads = TradingHeads(
            2 * hidden, hidden, trading.risk_multiplier, trading.reward_multiplier, trading.max_position_size
        )
        self.register_buffer("H_init", nn.init.trunc_normal_(torch.empty(hidden), std=1.0, a=-2.0, b=2.0))
        self.register_buffer("L_init", nn.init.trunc_normal_(torch.empty(hidden), std=1.0, a=-2.0, b=2.0))

    def set_cycles(self, H_cycles: int, L_cycles: int) -> None:
        """Curriculum stages change the cycle counts of the same weights."""
        self.H_cycles, self.L_cycles = H_cycles, L_cycles

    def embed(self, inputs: MarketInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """x_H [B, H tokens, D] from pooled strategic bars; x_L [B, L bars, D] from tactical bars
        with the account state appended to each."""
        strategic = inputs.strategic
        batch, bars, features = strategic.shape
        pad = self.h_tokens * self.h_pool - bars
        if pad:  # pad the oldest end so the newest bar closes the last token
            strategic = torch.cat([strategic.new_zeros(batch, pad, features), strategic], dim=1)
        x_H = self.embed_H(strategic.reshape(batch, self.h_tokens, self.h_pool * features))
        account = inputs.account[:, None, :].expand(-1, inputs.tactical.shape[1], -1)
        x_L = self.embed_L(torch.cat([inputs.tactical, account], dim=-1))
        return x_H, x_L

    def initial_carry(self, batch: int) -> Carry:
        return Carry(
            z_H=self.H_init.expand(batch, self.h_tokens, -1).clone(),
            z_L=self.L_init.expand(batch, self.low_level_lookback, -1).clone(),
        )

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
        summary = torch.cat([z_L[:, -1], z_H.mean(1)], dim=-1)  # [B, 2D]
        outputs = self.heads(summary, z_H.mean(1), inputs.position)
        return Carry(z_H.detach(), z_L.detach()), outputs
