"""The engine's torch twin: ``decisions.decide`` and ``run_bar`` for a path of executed exposures,
in torch, so the training loss and the training-side rollouts earn exactly what a backtest earns.

A path of exposures w_t (decided at bar t's close, t = 0..T−1, exit rules off) runs as the engine
runs a policy whose actions move the position to w_t (``exposure.action_of``): when w_t differs from
the exposure held, the order is w_t · equity_t / close_t − shares, sized at the decision close;
it fills at open_{t+1} with slippage against the trade and pays ``commission`` × traded value plus
``fixed_fee`` (at a cap ≤ 1 a buy that open makes unaffordable is cut to what cash buys); shorts
pay ``borrow_rate`` × their value at each close; equity is cash + shares · close. In float64 the twin equals
``run_decisions`` to 1e-9 (``tests/test_engine.py``).

The engine's path is not a useful function to differentiate: a position the band holds is shares
held, with no gradient to the decision that holds it. ``differentiable_returns`` therefore has the
engine's values and the gradient of the per-decision net return w_t·R_t − (c + s)·|Δw_t| −
f·1[Δw_t ≠ 0] − b·max(−w_t, 0) (R_t: open_{t+1} → open_{t+2}; c, s: commission, slippage; f: the
fixed fee over the starting capital; b: borrow), which differs from the engine's bar return only by
the drift of the held fraction inside a held position and the bar's alignment (a straight-through
estimator, as ``exposure.execute_path`` is for the band).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm_core.core.config import TradingConfig


@dataclass
class TwinRun:
    """[B, T+1] equity at each close (from the starting cash); [B, T] what bar t+1 added."""

    equity: torch.Tensor
    returns: torch.Tensor  # equity_{t+1} / equity_t − 1: decision t's first bar
    costs: torch.Tensor  # fees, slippage and borrow paid over bar t+1, as a fraction of equity_t


@torch.no_grad()
def run_positions(
    position: torch.Tensor, open_: torch.Tensor, close: torch.Tensor, trading: TradingConfig
) -> TwinRun:
    """Run [B, T] executed exposures over [B, T+1] bars (open, close), starting flat with
    ``initial_capital``, in float64."""
    position, open_, close = (x.to(torch.float64) for x in (position, open_, close))
    cash = torch.full(position.shape[:1], float(trading.initial_capital), dtype=torch.float64)
    cash = cash.to(position.device)
    shares = torch.zeros_like(cash)
    held = torch.zeros_like(cash)  # the exposure decided last: the engine's HOLD compares with it
    equity, costs = [cash], []
    for t in range(position.shape[1]):
        w, price, fill_at = position[:, t], close[:, t], open_[:, t + 1]
        value = cash + shares * price
        size = w.clamp(-trading.max_position_size, trading.max_position_size) * value / price
        order = torch.where(w != held, size - shares, torch.zeros_like(size))
        held = w
        fill_price = fill_at * (1 + trading.slippage * torch.sign(order))
        cut = torch.zeros_like(order, dtype=torch.bool)
        if trading.max_position_size <= 1:  # a buy the open made dearer is cut to what cash buys
            cut = (order > 0) & (order * fill_price * (1 + trading.commission) + trading.fixed_fee > cash)
            affordable = (cash - trading.fixed_fee).clamp_min(0.0) / (1 + trading.commission) / fill_price
            order = torch.where(cut, affordable, order)
        fee = order.abs() * fill_price * trading.commission + trading.fixed_fee * (order != 0)
        shares = shares + order
        borrow = trading.borrow_rate * (-shares).clamp_min(0.0) * close[:, t + 1]
        cash = torch.where(cut, torch.zeros_like(cash), cash - order * fill_price - fee) - borrow
        equity.append(cash + shares * close[:, t + 1])
        costs.append((fee + (order * (fill_price - fill_at)).abs() + borrow) / value)
    path = torch.stack(equity, dim=1)
    return TwinRun(path, path[:, 1:] / path[:, :-1] - 1, torch.stack(costs, dim=1))


def per_decision_returns(
    position: torch.Tensor, next_return: torch.Tensor, trading: TradingConfig
) -> torch.Tensor:
    """[B, T] w_t·R_t less every cost the engine charges on the change from w_{t−1} (from flat):
    the per-decision PnL whose gradient ``differentiable_returns`` carries."""
    traded = position - torch.cat([torch.zeros_like(position[:, :1]), position[:, :-1]], dim=1)
    costs = (trading.commission + trading.slippage) * traded.abs()
    costs = costs + trading.fixed_fee / trading.initial_capital * (traded != 0).to(position.dtype)
    costs = costs + trading.borrow_rate * (-position).clamp_min(0.0)
    return position * next_return - costs


def differentiable_returns(
    position: torch.Tensor,
    open_: torch.Tensor,
    close: torch.Tensor,
    next_return: torch.Tensor,
    trading: TradingConfig,
) -> torch.Tensor:
    """[B, T] float64: the engine's bar returns (``run_positions``) in value, with the gradient of
    ``per_decision_returns`` (see the module docstring)."""
    exact = run_positions(position, open_, close, trading).returns
    surrogate = per_decision_returns(position.to(torch.float64), next_return.to(torch.float64), trading)
    return exact + (surrogate - surrogate.detach())
