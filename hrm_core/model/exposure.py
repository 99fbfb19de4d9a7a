"""From the policy's outputs to the seed's actions: the one definition used by the training loss,
the environments and backtests (through the engine), the streaming agent and serving.

The policy is a benchmark a user could simply hold plus a learned, bounded tilt (``PolicyConfig``):

    tilt   = gate · tanh(tilt_logit + hold_weight · held_tilt),  held_tilt = (held − benchmark) / max_tilt
    target = clip(benchmark + max_tilt · tilt, −cap, cap)

``benchmark`` is computed from information at the decision bar (``benchmark_exposure``); the cap is
``max_position_size`` (``fixed_fraction``) or, with ``volatility_adjusted`` sizing, the exposure
that risks ``risk_per_trade`` of equity over ``risk_multiplier`` ATRs. The model reads the tilt it
holds (``hold_weight``), so it can learn to keep a position rather than churn; ``gate`` is 0 for a
model whose tilt did not pay on validation, which then trades the benchmark exactly.

A no-trade band keeps small changes from paying costs: a target within ``band`` of zero is flat,
and the position moves only when the (snapped) target is at least ``band`` away from the position
held. The seed's five actions describe the move: BUY_LONG q / SELL_SHORT q go to +q / −q of equity
(from flat, resizing, or flipping), CLOSE_LONG / CLOSE_SHORT go flat, HOLD keeps the position.

The rules take torch tensors or numpy arrays (``_xp``): the served model decides without torch.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from hrm_core.core.config import PolicyConfig, TradingConfig
from hrm_core.core.vocabulary import BUY_LONG, CLOSE_LONG, CLOSE_SHORT, HOLD, SELL_SHORT

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array")  # a torch.Tensor or a numpy.ndarray


def _xp(array: object) -> ModuleType:
    """numpy for numpy arrays (the torch-free server), torch for tensors (already imported by
    whoever made them)."""
    if isinstance(array, np.ndarray):
        return np
    import torch

    return torch


def exposure_cap(close: Array, atr: Array, trading: TradingConfig) -> Array:
    """The largest exposure the sizing rule allows at each bar (same shape as ``close``)."""
    xp = _xp(close)
    cap = xp.full_like(close, trading.max_position_size)
    if trading.position_sizing_method == "volatility_adjusted":
        stop_distance = trading.risk_multiplier * xp.clip(atr, 1e-12, None) / close
        cap = xp.minimum(cap, trading.risk_per_trade / stop_distance)
    return cap


def benchmark_exposure(
    close: np.ndarray, symbol_id: np.ndarray, policy: PolicyConfig, trading: TradingConfig
) -> np.ndarray:
    """[N] the benchmark's exposure decided at each bar's close from that bar and earlier, per
    symbol (bars of a symbol contiguous and in time order). ``volatility_targeted``: long
    ``target_volatility`` / the annualised deviation of the last ``volatility_window`` log returns
    (flat until that many exist), capped at ``max_position_size``."""
    close = np.asarray(close, dtype=float)
    if policy.benchmark == "flat":
        return np.zeros(len(close))
    if policy.benchmark == "buy_and_hold":
        return np.full(len(close), trading.max_position_size)
    window = policy.volatility_window
    log_return = np.full(len(close), np.nan)
    log_return[1:] = np.diff(np.log(close))
    first = np.ones(len(close), dtype=bool)
    first[1:] = symbol_id[1:] != symbol_id[:-1]
    log_return[first] = np.nan
    out = np.zeros(len(close))
    if len(close) >= window:
        windows = np.lib.stride_tricks.sliding_window_view(log_return, window)  # [N − window + 1, window]
        deviation = windows.std(axis=1, ddof=1) * np.sqrt(trading.periods_per_year)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.minimum(policy.target_volatility / deviation, trading.max_position_size)
        out[window - 1 :] = np.where(np.isfinite(scaled), scaled, 0.0)
    return out


def held_tilt(held: Array, benchmark: Array, policy: PolicyConfig) -> Array:
    """The tilt a position ``held`` amounts to: what the model reads of the account."""
    return (held - benchmark) / policy.max_tilt


def policy_tilt(tilt_logit: Array, held_tilt: Array, hold_weight: Array, gate: Array) -> Array:
    """The tilt in [−1, 1] the model decides, given the tilt held, so it can learn to keep it."""
    return gate * _xp(tilt_logit).tanh(tilt_logit + hold_weight * held_tilt)


def policy_target(tilt: Array, benchmark: Array, cap: Array, policy: PolicyConfig) -> Array:
    """The target exposure: the benchmark plus ``max_tilt`` × tilt, within ±cap."""
    xp = _xp(tilt)
    return xp.minimum(xp.maximum(benchmark + policy.max_tilt * tilt, -cap), cap)


def next_position(target: Array, held: Array, band: float) -> Array:
    """The exposure after the decision: ``target`` (snapped to 0 inside the band around 0) when it is
    at least ``band`` away from ``held``, else ``held``."""
    xp = _xp(target)
    snapped = xp.where(abs(target) < band, xp.zeros_like(target), target)
    return xp.where(abs(snapped - held) >= band, snapped, held)


def action_of(position: Array, held: Array) -> Array:
    """The seed's action (index into ``ACTIONS``) that moves ``held`` to ``position``."""
    xp = _xp(position)
    action = xp.where(position > 0, BUY_LONG, SELL_SHORT)
    action = xp.where(position == 0, xp.where(held > 0, CLOSE_LONG, CLOSE_SHORT), action)
    return xp.where(position == held, HOLD, action)


def direction_confidence(position: Array, p_up: Array) -> Array:
    """P(the market moves the decided position's way): p_up for a long or flat position, 1 − p_up
    for a short one."""
    return _xp(position).where(position < 0, 1 - p_up, p_up)


def band_path(targets: np.ndarray, band: float) -> np.ndarray:
    """[T] positions a path of targets leads to through the band, starting flat (``next_position``
    bar by bar): how a rule baseline or the benchmark trades, exactly as a model's targets do."""
    positions, held = np.empty(len(targets)), np.zeros(())
    for t, target in enumerate(np.asarray(targets, dtype=float)):
        held = next_position(np.asarray(target), held, band)
        positions[t] = held
    return positions


def decide_exposure(
    tilt_logit: Array,
    held: Array,
    benchmark: Array,
    cap: Array,
    hold_weight: Array,
    gate: Array,
    policy: PolicyConfig,
    band: float,
) -> tuple[Array, Array, Array]:
    """(tilt, target, position) of one decision: every caller (agent, envs, serving) goes through
    here, and ``execute_path`` runs it along a path for the loss."""
    tilt = policy_tilt(tilt_logit, held_tilt(held, benchmark, policy), hold_weight, gate)
    target = policy_target(tilt, benchmark, cap, policy)
    return tilt, target, next_position(target, held, band)


def execute_path(
    tilt_logits: torch.Tensor,
    benchmark: torch.Tensor,
    cap: torch.Tensor,
    hold_weight: torch.Tensor,
    gate: torch.Tensor,
    policy: PolicyConfig,
    band: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T] tilts, raw targets and positions of a path of decisions starting flat, each decision
    reading the position the previous one left (``decide_exposure`` bar by bar). Position values are
    exactly what the engine executes; the gradient flows to the targets straight through the band,
    so a position the band holds still learns where it wants to be (the loss also charges the raw
    targets' turnover, which the band would otherwise hide)."""
    held = tilt_logits.new_zeros(tilt_logits.shape[0])
    tilts, targets, positions = [], [], []
    for t in range(tilt_logits.shape[1]):
        tilt = policy_tilt(tilt_logits[:, t], held_tilt(held, benchmark[:, t], policy), hold_weight, gate)
        target = policy_target(tilt, benchmark[:, t], cap[:, t], policy)
        executed = next_position(target.detach(), held.detach(), band)
        held = target + (executed - target).detach()
        tilts.append(tilt)
        targets.append(target)
        positions.append(held)
    stack = _xp(tilt_logits).stack
    return stack(tilts, dim=1), stack(targets, dim=1), stack(positions, dim=1)
