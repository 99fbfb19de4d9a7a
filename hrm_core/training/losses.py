"""The training objective: the trading loss of the executed position path, the outcome heads' losses
and the ACT Q loss, with deep supervision over segments.

Per chunk, the model's targets (signal × cap) go through the no-trade band exactly as the engine
executes them (``exposure.execute_path``): position w_t is held from open[t+1] to open[t+2], and
costs are charged on the model's own position changes, so r_t = w_t·R_t − c·|w_t − w_{t−1}|
(starting flat, c = commission + slippage). Raw returns; the terms are scaled, not the returns:

- growth G: mean log(1 + r_t), annualised (× periods per year);
- sharpe S: each chunk's annualised Sharpe ratio, averaged over chunks;
- drawdown D: each chunk's maximum drawdown of cumulative log growth, averaged.

L_trade = −w_G·G − w_S·S + w_D·D. Its optimum for i.i.d. returns (mean μ, deviation σ per bar)
and a constant exposure p > 0: S = μ/σ·√P does not depend on |p|, G ≈ P·(pμ − p²σ²/2) and D grows
about linearly, D ≈ p·d₁, so p* = (μ − w_D·d₁/(w_G·P)) / σ², the Kelly fraction μ/σ² shrunk by the
drawdown weight, then capped at the sizing cap; with μ = 0 it is flat. ``constant_exposure_loss``
scores any constant exposure on real returns, so the optimum can be checked before training.

The outcome heads add cross-entropy for p_up and the regime, and squared error for log volatility
(weight ``outcome``). Deep supervision: every segment's decision carries the whole loss, averaged
over segments. Q targets (ACT): q_halt learns whether one more segment would *not* have raised the
decision's one-bar return; q_continue is bootstrapped from the next segment's max(q_halt,
q_continue), as in the reference.

Every mean over the batch is a sum divided by a count that ``Share`` may total over processes:
under data-parallel training each process holds a slice of the global batch, its loss is its
slice's part of the global loss, and the summed gradients are exactly the single-process ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from hrm_core.config import HRMConfig
from hrm_core.model.act import SegmentRun
from hrm_core.model.exposure import execute_path
from hrm_core.model.heads import TradingOutputs
from hrm_core.training.data import Chunks

TERMS = ("growth", "sharpe", "drawdown")

Share = Callable[[torch.Tensor], torch.Tensor]
"""Sums a per-process quantity (a count, a loss part) over the processes; the identity in one."""


def whole_batch(count: torch.Tensor) -> torch.Tensor:
    return count


def batch_mean(
    values: torch.Tensor, share: Share = whole_batch, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of ``values`` (where ``mask``) over the global batch: this slice's sum over the global count."""
    if mask is not None:
        values = values[mask]
    count = share(torch.tensor(float(values.numel()), device=values.device))
    return values.sum() / count.clamp_min(1.0)


def net_returns(position: torch.Tensor, next_return: torch.Tensor, cost_rate: float) -> torch.Tensor:
    """[B, T] net return of each chunk's position path (held from the next open), starting flat."""
    previous = torch.cat([torch.zeros_like(position[:, :1]), position[:, :-1]], dim=1)
    return position * next_return - cost_rate * (position - previous).abs()


def trading_terms(
    r: torch.Tensor, periods_per_year: float, share: Share = whole_batch
) -> dict[str, torch.Tensor]:
    """The three terms of net returns ``r`` [B, T]."""
    log_growth = torch.log1p(r.clamp_min(-0.99))
    sharpe = r.mean(-1) / (r.std(-1) + 1e-4) * periods_per_year**0.5
    wealth = log_growth.cumsum(-1)
    peak = torch.cummax(torch.cat([torch.zeros_like(wealth[:, :1]), wealth], dim=-1), -1).values[:, 1:]
    return {
        "growth": batch_mean(log_growth, share) * periods_per_year,
        "sharpe": batch_mean(sharpe, share),
        "drawdown": batch_mean((peak - wealth).amax(-1), share),
    }


def trading_loss(terms: dict[str, torch.Tensor], config: HRMConfig) -> torch.Tensor:
    w = config.training.loss_weights
    return -w.growth * terms["growth"] - w.sharpe * terms["sharpe"] + w.drawdown * terms["drawdown"]


def constant_exposure_loss(exposure: float, next_return: torch.Tensor, config: HRMConfig) -> float:
    """The trading loss of holding ``exposure`` on every decision of chunks ``next_return`` [B, T]."""
    position = torch.full_like(next_return, exposure)
    cost_rate = config.trading.commission + config.trading.slippage
    r = net_returns(position, next_return, cost_rate)
    return float(trading_loss(trading_terms(r, config.trading.periods_per_year), config))


def outcome_loss(out: TradingOutputs, chunks: Chunks, share: Share = whole_batch) -> torch.Tensor:
    """p_up and regime cross-entropy and log-volatility squared error, where the targets are known."""
    up, log_vol, regime = chunks.up.reshape(-1), chunks.log_volatility.reshape(-1), chunks.regime.reshape(-1)
    known, labelled = torch.isfinite(up), regime >= 0
    up_loss = F.binary_cross_entropy_with_logits(out.up_logit, up.nan_to_num(), reduction="none")
    vol_loss = (out.log_volatility - log_vol.nan_to_num()).pow(2)
    regime_loss = F.cross_entropy(out.regime_logits, regime.clamp_min(0), reduction="none")
    return (
        batch_mean(up_loss, share, known)
        + batch_mean(vol_loss, share, known)
        + batch_mean(regime_loss, share, labelled)
    )


def act_loss(
    run: SegmentRun, chunks: Chunks, config: HRMConfig, act: bool, share: Share = whole_batch
) -> tuple[torch.Tensor, dict[str, float]]:
    """This process's part of the total loss over the run's segments, and the logged numbers of the
    whole batch (the last segment's terms)."""
    trading = config.trading
    weights = config.training.loss_weights
    cost_rate = trading.commission + trading.slippage
    shape = chunks.shape
    total = torch.zeros((), device=chunks.next_return.device)
    one_bar = []
    for m, decision in enumerate(run.outputs):
        targets = decision.signal.view(shape) * chunks.cap
        positions = execute_path(targets, trading.no_trade_band)
        r = net_returns(positions, chunks.next_return, cost_rate)
        terms = trading_terms(r, trading.periods_per_year, share)
        outcome = outcome_loss(decision, chunks, share)
        total = total + trading_loss(terms, config) + weights.outcome * outcome
        raw_targets = run.raw[m].signal.view(shape) * chunks.cap
        one_bar.append((raw_targets * chunks.next_return).reshape(-1))
    total = total / len(run.outputs)
    if act:
        q_loss = _q_loss(run, one_bar, share)
        total = total + weights.q * q_loss
    parts = {**terms, "outcome": outcome, **({"q": q_loss} if act else {}), "loss": total}
    logged = {name: float(share(value.detach())) for name, value in parts.items()}  # whole-batch values
    logged["exposure"] = float(share(batch_mean(positions.detach().abs(), share)))
    logged["segments"] = float(share(batch_mean(run.steps.float(), share)))
    return total, logged


def _q_loss(run: SegmentRun, one_bar: list[torch.Tensor], share: Share) -> torch.Tensor:
    """BCE of the Q head on live samples of every segment."""
    losses = []
    last = len(run.outputs) - 1
    for m, decision in enumerate(run.outputs):
        live = run.live[m]
        if m < last:
            halt_target = (one_bar[m + 1] <= one_bar[m]).float()
            nxt = run.raw[m + 1]
            continue_target = torch.sigmoid(torch.maximum(nxt.q_halt, nxt.q_continue))
        else:
            halt_target = torch.ones_like(one_bar[m])
            continue_target = torch.zeros_like(one_bar[m])
        bce = F.binary_cross_entropy_with_logits(decision.q_halt, halt_target, reduction="none")
        bce = bce + F.binary_cross_entropy_with_logits(decision.q_continue, continue_target, reduction="none")
        losses.append(batch_mean(bce, share, live))
    return torch.stack(losses).mean()
