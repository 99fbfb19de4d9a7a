"""The execution model (DESIGN.md "Trading semantics"), shared by the backtester and environments.

A decision at bar t fills at bar t+1's open (``price="next_open"``), or at bar t's close for
comparison with other libraries (``price="close"``). Slippage moves the fill against the trade
(buy: price·(1 + slippage), sell: price·(1 − slippage)); each fill pays ``fees`` × traded value
plus ``fixed_fees``. Cash changes by −size·price − fee; the portfolio's value at a bar's close is
cash + position·close. These are the conventions of vectorbt's ``Portfolio.from_orders``, which
the tests check fill by fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import pandas as pd


@numba.njit(cache=True)
def fill(size: float, price: float, cash: float, fees: float, fixed_fees: float, slippage: float):
    """Execute ``size`` shares (+ buy, − sell) at ``price``: returns (fill price, fee, new cash)."""
    filled = price * (1.0 + slippage) if size > 0 else price * (1.0 - slippage)
    fee = abs(size) * filled * fees + fixed_fees
    return filled, fee, cash - size * filled - fee


@numba.njit(cache=True)
def _simulate_orders(fill_price, close, orders, lag, init_cash, fees, fixed_fees, slippage):
    n = close.shape[0]
    cash = np.empty(n)
    position = np.empty(n)
    fill_bar = np.empty(n, dtype=np.int64)
    fill_size = np.empty(n)
    fill_px = np.empty(n)
    fill_fee = np.empty(n)
    count = 0
    c, p = init_cash, 0.0
    for t in range(n):
        if t >= lag:
            size = orders[t - lag]
            if size == size and size != 0.0:  # not NaN, not zero
                px, fee, c = fill(size, fill_price[t], c, fees, fixed_fees, slippage)
                p += size
                fill_bar[count], fill_size[count], fill_px[count], fill_fee[count] = t, size, px, fee
                count += 1
        cash[t] = c
        position[t] = p
    return cash, position, fill_bar[:count], fill_size[:count], fill_px[:count], fill_fee[:count]


@dataclass
class OrdersResult:
    """What ``simulate_orders`` did: one row per fill, and cash, position and value per bar."""

    fills: pd.DataFrame  # bar, ts, size, price, fees, side
    cash: pd.Series
    position: pd.Series
    value: pd.Series

    @property
    def final_value(self) -> float:
        return float(self.value.iloc[-1])


def simulate_orders(
    bars: pd.DataFrame,
    orders: np.ndarray | pd.Series,
    *,
    init_cash: float,
    fees: float,
    fixed_fees: float = 0.0,
    slippage: float = 0.0,
    price: Literal["next_open", "close"] = "next_open",
) -> OrdersResult:
    """Execute share ``orders`` (one per bar of ``bars``; + buy, − sell, 0/NaN none).

    ``price="next_open"``: the order of bar t fills at bar t+1's open (the last bar's order never
    fills). ``price="close"``: at bar t's close. Orders are executed as given: sizing, and so
    leverage, is the caller's.
    """
    size = np.asarray(orders, dtype=float)
    if len(size) != len(bars):
        raise ValueError(f"simulate_orders: {len(size)} orders for {len(bars)} bars; give one per bar")
    bad = np.flatnonzero(np.isinf(size))
    if len(bad):
        raise ValueError(f"simulate_orders: order at bar {bad[0]} is {size[bad[0]]}; sizes must be finite")
    if price not in ("next_open", "close"):
        raise ValueError(f"simulate_orders: price must be 'next_open' or 'close', not {price!r}")
    close = bars["close"].to_numpy(float)
    fill_price = bars["open"].to_numpy(float) if price == "next_open" else close
    lag = 1 if price == "next_open" else 0
    cash, position, bar, filled, px, fee = _simulate_orders(
        fill_price, close, size, lag, float(init_cash), float(fees), float(fixed_fees), float(slippage)
    )
    index = bars["ts"] if "ts" in bars else pd.RangeIndex(len(bars))
    index = pd.Index(index)
    fills = pd.DataFrame(
        {
            "bar": bar,
            "ts": index[bar],
            "size": filled,
            "price": px,
            "fees": fee,
            "side": np.where(filled > 0, "buy", "sell"),
        }
    )
    return OrdersResult(
        fills=fills,
        cash=pd.Series(cash, index=index),
        position=pd.Series(position, index=index),
        value=pd.Series(cash + position * close, index=index),
    )


@numba.njit(cache=True)
def _simulate_exposures(open_, close, exposure, init_cash, fees, fixed_fees, slippage):
    n = close.shape[0]
    orders = np.full(n, np.nan)
    c, p, pending, last_target = init_cash, 0.0, np.nan, 0.0
    for t in range(n):
        if pending == pending and pending != 0.0:  # the previous bar's order fills at this open
            _, _, c = fill(pending, open_[t], c, fees, fixed_fees, slippage)
            p += pending
        pending = np.nan
        target = exposure[t]
        if t < n - 1 and target != last_target:  # rebalance when the target changes
            value = c + p * close[t]
            pending = target * value / close[t] - p
            orders[t] = pending
            last_target = target
    return orders


def simulate_exposures(
    bars: pd.DataFrame,
    exposure: np.ndarray | pd.Series,
    *,
    init_cash: float,
    fees: float,
    fixed_fees: float = 0.0,
    slippage: float = 0.0,
) -> OrdersResult:
    """Trade toward target ``exposure`` (fraction of value, + long / − short), decided at each bar's
    close: when the target changes, order the shares that make position·close = target·value at
    that close; the order fills at the next open like any other."""
    target = np.asarray(exposure, dtype=float)
    if len(target) != len(bars):
        raise ValueError(
            f"simulate_exposures: {len(target)} exposures for {len(bars)} bars; give one per bar"
        )
    bad = np.flatnonzero(~np.isfinite(target))
    if len(bad):
        raise ValueError(
            f"simulate_exposures: exposure at bar {bad[0]} is {target[bad[0]]}; it must be finite"
        )
    open_, close = bars["open"].to_numpy(float), bars["close"].to_numpy(float)
    orders = _simulate_exposures(open_, close, target, float(init_cash), fees, fixed_fees, slippage)
    return simulate_orders(
        bars, orders, init_cash=init_cash, fees=fees, fixed_fees=fixed_fees, slippage=slippage
    )
