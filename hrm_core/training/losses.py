"""The seed's trading loss with multi-horizon deep supervision and the ACT Q loss.

L_ACT = α1·L_immediate + α2·L_short + α3·L_medium + α4·L_long + β·L_Q over a differentiable
backtest of each chunk: the decision at bar t sets the position held from open[t+1] to open[t+2]
(DESIGN.md: fills at the next bar's open), and commission plus slippage are charged on the change
from the position held before the decision. Per-bar net returns g_t are divided by the batch's
return volatility so that the trading terms are O(1), like the Q loss beside them.

- immediate: −mean g_t (one-bar PnL)
- short: −Sharpe of g over windows of ``short_window`` bars
- medium: mean max drawdown of cumulative g over windows of ``medium_window`` bars
- long: −mean log growth over the whole chunk (≥ 100 bars), which also penalises variance

Deep supervision: segment m of M carries the first ceil(4·(m+1)/M) terms, so early segments learn
the immediate PnL and the last one the whole loss. Q targets (ACT): q_halt learns whether one more
segment would *not* have lowered the sample's loss; q_continue is bootstrapped from the next
segment's max(q_halt, q_continue), as in the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hrm_core.config import TradingConfig, TrainingConfig
from hrm_core.model.act import SegmentRun
from hrm_core.training.data import Chunks

TERMS = ("immediate", "short", "medium", "long")


def net_returns(
    position: torch.Tensor, held: torch.Tensor, next_return: torch.Tensor, cost_rate: float
) -> torch.Tensor:
    """[B, T] net return of holding ``position`` for one bar after trading from ``held``."""
    return position * next_return - cost_rate * (position - held).abs()


def trading_terms(g: torch.Tensor, short_window: int, medium_window: int) -> dict[str, torch.Tensor]:
    """The four horizon terms of scaled per-bar net returns ``g`` [B, T]."""
    short = g.unfold(1, min(short_window, g.shape[1]), 1)  # [B, windows, w]
    sharpe = short.mean(-1) / (short.std(-1) + 1e-3)
    medium = g.unfold(1, min(medium_window, g.shape[1]), 1).cumsum(-1)
    drawdown = (medium.cummax(-1).values.clamp_min(0) - medium).amax(-1)
    growth = torch.log1p(g.clamp_min(-0.99)).mean(-1)
    return {
        "immediate": -g.mean(),
        "short": -sharpe.mean(),
        "medium": drawdown.mean(),
        "long": -growth.mean(),
    }


def terms_for_segment(segment: int, segments: int) -> tuple[str, ...]:
    """Horizon terms supervised at ``segment`` (0-based) of ``segments``."""
    return TERMS[: math.ceil(len(TERMS) * (segment + 1) / segments)]


def act_loss(
    run: SegmentRun, chunks: Chunks, training: TrainingConfig, trading: TradingConfig, act: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss over the run's segments and a dict of logged numbers (last segment's terms)."""
    weights = training.loss_weights.model_dump()
    cost_rate = trading.commission + trading.slippage
    shape = chunks.held.shape
    scale = chunks.next_return.std().clamp_min(1e-8).detach()
    held = chunks.held.float()
    next_return = chunks.next_return.float()
    segments = len(run.outputs)
    total = torch.zeros((), device=held.device)
    per_sample = []
    for m, decision in enumerate(run.outputs):
        position = decision.target_position(chunks.inputs.position).view(shape)
        g = net_returns(position, held, next_return, cost_rate) / scale
        terms = trading_terms(g, training.short_window, training.medium_window)
        total = total + sum(weights[name] * terms[name] for name in terms_for_segment(m, segments))
        raw_position = run.raw[m].target_position(chunks.inputs.position).view(shape)
        per_sample.append(-net_returns(raw_position, held, next_return, cost_rate).reshape(-1) / scale)
    total = total / segments
    logged = {name: float(value.detach()) for name, value in terms.items()}
    if act:
        q_loss = _q_loss(run, per_sample)
        total = total + weights["q"] * q_loss
        logged["q"] = float(q_loss.detach())
    logged["loss"] = float(total.detach())
    logged["segments"] = float(run.steps.float().mean())
    return total, logged


def _q_loss(run: SegmentRun, per_sample: list[torch.Tensor]) -> torch.Tensor:
    """BCE of the Q head on live samples of every segment."""
    losses = []
    last = len(run.outputs) - 1
    for m, decision in enumerate(run.outputs):
        live = run.live[m]
        if m < last:
            halt_target = (per_sample[m + 1] >= per_sample[m]).float()
            nxt = run.raw[m + 1]
            continue_target = torch.sigmoid(torch.maximum(nxt.q_halt, nxt.q_continue))
        else:
            halt_target = torch.ones_like(per_sample[m])
            continue_target = torch.zeros_like(per_sample[m])
        bce = F.binary_cross_entropy_with_logits(decision.q_halt, halt_target, reduction="none")
        bce = bce + F.binary_cross_entropy_with_logits(decision.q_continue, continue_target, reduction="none")
        losses.append((bce * live.float()).sum() / live.float().sum().clamp_min(1))
    return torch.stack(losses).mean()
