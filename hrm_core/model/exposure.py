"""From the policy's target exposure to the seed's actions: the one definition used by the training
loss, the environments and backtests (through the engine), the streaming agent and serving.

The policy outputs a *signal* in [−1, 1]; its target exposure (position value / equity, + long,
− short) is ``signal × cap``, where the cap is ``max_position_size`` (``fixed_fraction``) or, with
``volatility_adjusted`` sizing, the exposure that risks ``risk_per_trade`` of equity over
``risk_multiplier`` ATRs, never above ``max_position_size``.

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

from hrm_core.config import TradingConfig
from hrm_core.vocabulary import BUY_LONG, CLOSE_LONG, CLOSE_SHORT, HOLD, SELL_SHORT

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


def execute_path(targets: torch.Tensor, band: float) -> torch.Tensor:
    """[B, T] positions a path of targets [B, T] leads to, starting flat: the values are exactly what
    the engine executes (``next_position`` bar by bar); the gradient flows to the targets straight
    through the band, so a position the band holds still learns where it wants to be."""
    held = targets[:, 0].new_zeros(targets.shape[0])
    executed = []
    for t in range(targets.shape[1]):
        held = next_position(targets[:, t].detach(), held, band)
        executed.append(held)
    positions = _xp(targets).stack(executed, dim=1)
    return targets + (positions - targets).detach()
