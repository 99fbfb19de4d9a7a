"""Account state: what a trader holds right now, as the environments report it to RL policies.
(The supervised models read no account state: see ``trader.MarketInputs``.)

Seven numbers per decision, all scale-free so that the model sees the same thing whatever the
price level or capital: equity change, signed position (fraction of capital), entry price and
unrealised PnL relative to the price, exposure, and distances to stop and target in ATRs.
"""

from __future__ import annotations

import torch

ACCOUNT_FEATURES = (
    "equity_change",
    "position",
    "entry_distance",
    "unrealised_pnl",
    "exposure",
    "stop_distance_atr",
    "target_distance_atr",
)


def account_state(
    position: torch.Tensor,
    entry_price: torch.Tensor,
    price: torch.Tensor,
    atr: torch.Tensor,
    stop_price: torch.Tensor,
    target_price: torch.Tensor,
    equity_ratio: torch.Tensor,
) -> torch.Tensor:
    """[..., 7] account features. ``position`` is signed (fraction of capital); stop and target are
    price levels (ignored when flat, distance 0 when NaN: no level); ``equity_ratio`` is equity /
    initial capital."""
    held = position != 0
    direction = torch.sign(position)
    safe_entry = torch.where(held, entry_price, price)
    atr = atr.clamp_min(1e-12)
    features = [
        equity_ratio - 1,
        position,
        torch.where(held, safe_entry / price - 1, torch.zeros_like(price)),
        position * (price / safe_entry - 1),
        position.abs(),
        torch.where(held, direction * (price - stop_price) / atr, torch.zeros_like(price)).nan_to_num(0.0),
        torch.where(held, direction * (target_price - price) / atr, torch.zeros_like(price)).nan_to_num(0.0),
    ]
    return torch.stack(features, dim=-1)
