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
"""

from __future__ import annotations

import torch

from hrm_core.config import TradingConfig
from hrm_core.vocabulary import BUY_LONG, CLOSE_LONG, CLOSE_SHORT, HOLD, SELL_SHORT


def exposure_cap(close: torch.Tensor, atr: torch.Tensor, trading: TradingConfig) -> torch.Tensor:
    """The largest exposure the sizing rule allows at each bar (same shape as ``close``)."""
    cap = torch.full_like(close, trading.max_position_size)
    if trading.position_sizing_method == "volatility_adjusted":
        stop_distance = trading.risk_multiplier * atr.clamp_min(1e-12) / close
        cap = torch.minimum(cap, trading.risk_per_trade / stop_distance)
    return cap


def next_position(target: torch.Tensor, held: torch.Tensor, band: float) -> torch.Tensor:
    """The exposure after the decision: ``target`` (snapped to 0 inside the band around 0) when it is
    at least ``band`` away from ``held``, else ``held``."""
    snapped = torch.where(target.abs() < band, torch.zeros_like(target), target)
    return torch.where((snapped - held).abs() >= band, snapped, held)


def action_of(position: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """The seed's action (index into ``ACTIONS``) that moves ``held`` to ``position``."""
    action = torch.where(position > 0, BUY_LONG, SELL_SHORT)
    action = torch.where(position == 0, torch.where(held > 0, CLOSE_LONG, CLOSE_SHORT), action)
    return torch.where(position == held, HOLD, action)


def execute_path(targets: torch.Tensor, band: float) -> torch.Tensor:
    """[B, T] positions a path of targets [B, T] leads to, starting flat: the values are exactly what
    the engine executes (``next_position`` bar by bar); the gradient flows to the targets straight
    through the band, so a position the band holds still learns where it wants to be."""
    held = torch.zeros_like(targets[:, 0])
    executed = []
    for t in range(targets.shape[1]):
        held = next_position(targets[:, t].detach(), held, band)
        executed.append(held)
    positions = torch.stack(executed, dim=1)
    return targets + (positions - targets).detach()
