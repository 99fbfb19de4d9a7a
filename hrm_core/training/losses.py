"""The training objective: the active trading loss of the executed position path against the
benchmark, the outcome heads' losses and the ACT Q loss, with deep supervision over segments.

Per chunk, the model's tilts give targets (benchmark + max_tilt · tilt) that go through the no-trade
band exactly as the engine executes them, each decision reading the position the previous one left
(``exposure.execute_path``). The positions then run through the engine's torch twin
(``engine.twin``, equal to the backtester's engine): sized from equity at the decision close,
filled at the next open with slippage, commission and the fixed fee, shorts paying borrow, shares
held through the band. r_t is the chunk's equity return over bar t+1 from a flat start, with the
per-decision net return's gradient (``engine.twin.differentiable_returns``). The benchmark's own
path through the same band earns r^B_t, and the active return is a_t = r_t − r^B_t. Pooled over
every decision of the batch (not per chunk: a 128-bar chunk's Sharpe is mostly noise, and fitting
its sign is worth far more than any cost):

- active A: the mean of a_t, annualised (× periods per year);
- variance V: the variance of a_t over the batch, annualised;
- turnover T: the raw targets' tilt changes |Δ(target − benchmark)| charged at c, annualised: the
  band holds a position without a cost gradient, so this keeps the raw target from drifting and
  then trading the whole gap (Deep Momentum Networks' turnover regulariser);
- tilt K: the mean squared tilt, pulling the policy back to the benchmark without evidence.

L_trade = −w_A·A + (γ/2)·V + w_T·T + w_K·K, γ = ``risk_aversion``. A zero tilt scores exactly 0 on
every term, so training can only leave the benchmark by earning it. For i.i.d. returns (mean μ,
deviation σ per bar) and a constant tilt k from a constant benchmark, A = P·k·μ and V = P·k²σ², so
k* = w_A·μ / (γσ²) (a Kelly fraction scaled by w_A/γ: 1/2 at the defaults), less the L2 pull,
bounded by ``max_tilt`` and the cap; with μ = 0 it is the benchmark. ``constant_tilt_loss`` scores
any constant tilt on real returns, so the optimum can be checked before training.

The outcome heads add cross-entropy for p_up and the regime, and squared error for log volatility
(weight ``outcome``). Deep supervision: every segment's decision carries the whole loss, averaged
over segments. Q targets (ACT): q_halt learns whether one more segment would *not* have raised the
decision's one-bar active return; q_continue is bootstrapped from the next segment's max(q_halt,
q_continue), as in the reference.

Every mean over the batch is a sum divided by a count that ``Share`` may total over processes:
under data-parallel training each process holds a slice of the global batch, its loss is its
slice's part of the global loss, and the summed gradients are exactly the single-process ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hrm_core.core.config import HRMConfig, TradingConfig
from hrm_core.dataset.windows import Chunks
from hrm_core.engine.twin import differentiable_returns
from hrm_core.model.act import SegmentRun
from hrm_core.model.exposure import execute_path, held_tilt, policy_target, policy_tilt
from hrm_core.model.heads import TradingOutputs

TERMS = ("active", "variance", "turnover", "tilt")

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


def _changes(path: torch.Tensor) -> torch.Tensor:
    """[B, T] change of each chunk's path from the previous bar, starting from 0 (flat)."""
    return path - torch.cat([torch.zeros_like(path[:, :1]), path[:, :-1]], dim=1)


def net_returns(position: torch.Tensor, chunks: Chunks, trading: TradingConfig) -> torch.Tensor:
    """[B, T] what each chunk's executed positions earn through the engine (its torch twin), net
    of every cost it charges, from a flat start: bar t+1's equity return, in float64, with the
    per-decision gradient (``engine.twin.differentiable_returns``)."""
    return differentiable_returns(position, chunks.open, chunks.close, chunks.next_return, trading)


@dataclass
class PolicyPath:
    """A chunk batch's decisions along the executed path: [B, T] each."""

    tilt: torch.Tensor
    target: torch.Tensor
    position: torch.Tensor


def policy_path(
    logits: torch.Tensor, chunks: Chunks, heads: torch.nn.Module, config: HRMConfig
) -> PolicyPath:
    """The executed path of tilt logits [B*T] on ``chunks`` (``exposure.execute_path``)."""
    tilt, target, position = execute_path(
        logits.view(chunks.shape),
        chunks.benchmark,
        chunks.cap,
        heads.hold,
        heads.tilt_gate,
        config.policy,
        config.trading.no_trade_band,
    )
    return PolicyPath(tilt, target, position)


def benchmark_positions(chunks: Chunks, config: HRMConfig) -> torch.Tensor:
    """[B, T] the benchmark policy's own path through the band, starting flat (no gradient)."""
    zero = chunks.benchmark.new_zeros(())
    return execute_path(
        torch.zeros_like(chunks.benchmark),
        chunks.benchmark,
        chunks.cap,
        zero,
        zero,
        config.policy,
        config.trading.no_trade_band,
    )[2]


def trading_terms(
    path: PolicyPath,
    chunks: Chunks,
    benchmark_position: torch.Tensor,
    config: HRMConfig,
    share: Share = whole_batch,
) -> dict[str, torch.Tensor]:
    """The four terms of a path (see the module docstring), pooled over the global batch."""
    trading, periods = config.trading, config.trading.periods_per_year
    active = net_returns(path.position, chunks, trading) - net_returns(benchmark_position, chunks, trading)
    mean = batch_mean(active, share)
    variance = batch_mean(active.pow(2), share) - mean.pow(2)
    tilt_change = _changes(path.target - chunks.benchmark)[:, 1:].abs()
    terms = {
        "active": mean * periods,
        "variance": variance * periods,
        "turnover": batch_mean(tilt_change, share) * (trading.commission + trading.slippage) * periods,
        "tilt": batch_mean(path.tilt.pow(2), share),
    }
    return {name: value.float() for name, value in terms.items()}


def trading_loss(terms: dict[str, torch.Tensor], config: HRMConfig) -> torch.Tensor:
    w = config.training.loss_weights
    return (
        -w.active * terms["active"]
        + w.risk_aversion / 2 * terms["variance"]
        + w.turnover * terms["turnover"]
        + w.tilt_l2 * terms["tilt"]
    )


def constant_tilt_loss(tilt: float, chunks: Chunks, config: HRMConfig) -> float:
    """The trading loss of the policy that decides ``tilt`` on every decision of ``chunks`` (no
    reading of the position held): 0 for a zero tilt, by construction."""
    logit = torch.full(chunks.shape, float(np.arctanh(np.clip(tilt, -1 + 1e-7, 1 - 1e-7))))
    zero, one = torch.zeros(()), torch.ones(())
    band = config.trading.no_trade_band
    t, target, position = execute_path(logit, chunks.benchmark, chunks.cap, zero, one, config.policy, band)
    path = PolicyPath(t, target, position)
    return float(
        trading_loss(trading_terms(path, chunks, benchmark_positions(chunks, config), config), config)
    )


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
    run: SegmentRun,
    chunks: Chunks,
    config: HRMConfig,
    act: bool,
    heads: torch.nn.Module,
    share: Share = whole_batch,
) -> tuple[torch.Tensor, dict[str, float]]:
    """This process's part of the total loss over the run's segments, and the logged numbers of the
    whole batch (the last segment's terms). ``heads``: the model's heads (hold weight, tilt gate)."""
    weights = config.training.loss_weights
    benchmark_position = benchmark_positions(chunks, config)
    total = torch.zeros((), device=chunks.next_return.device)
    one_bar = []
    for m, decision in enumerate(run.outputs):
        path = policy_path(decision.tilt_logit, chunks, heads, config)
        terms = trading_terms(path, chunks, benchmark_position, config, share)
        outcome = outcome_loss(decision, chunks, share)
        total = total + trading_loss(terms, config) + weights.outcome * outcome
        one_bar.append(_one_bar_active(run.raw[m].tilt_logit.detach(), path, chunks, heads, config))
    total = total / len(run.outputs)
    if act:
        q_loss = _q_loss(run, one_bar, share)
        total = total + weights.q * q_loss
    parts = {**terms, "outcome": outcome, **({"q": q_loss} if act else {}), "loss": total}
    logged = {name: float(share(value.detach())) for name, value in parts.items()}  # whole-batch values
    logged["exposure"] = float(share(batch_mean(path.position.detach().abs(), share)))
    logged["tilt_abs"] = float(share(batch_mean(path.tilt.detach().abs(), share)))
    logged["segments"] = float(share(batch_mean(run.steps.float(), share)))
    return total, logged


def _one_bar_active(
    logits: torch.Tensor, path: PolicyPath, chunks: Chunks, heads: torch.nn.Module, config: HRMConfig
) -> torch.Tensor:
    """[B*T] one-bar active return of a segment's own (raw) decision, reading the position the
    executed path held before it: what the Q head's halting target compares between segments."""
    held = torch.cat([torch.zeros_like(path.position[:, :1]), path.position[:, :-1]], dim=1).detach()
    tilt = policy_tilt(
        logits.view(chunks.shape),
        held_tilt(held, chunks.benchmark, config.policy),
        heads.hold.detach(),
        heads.tilt_gate,
    )
    target = policy_target(tilt, chunks.benchmark, chunks.cap, config.policy)
    return ((target - chunks.benchmark) * chunks.next_return).reshape(-1)


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


def active_returns(
    run: SegmentRun, chunks: Chunks, heads: torch.nn.Module, config: HRMConfig
) -> torch.Tensor:
    """[B, T] active net returns of the run's final decisions against the benchmark on ``chunks``:
    what checkpoint selection and the tilt's deployment gate judge."""
    path = policy_path(run.final.tilt_logit, chunks, heads, config)
    own = net_returns(path.position, chunks, config.trading)
    return own - net_returns(benchmark_positions(chunks, config), chunks, config.trading)
