"""Executing trading decisions: the seed's actions with quantity, stop and target, bar by bar.

The decision of bar t (made at its close) fills at bar t+1's open. An entry's stop and target are
set from that fill price and the ATR known at the decision: long stop = entry − stop_atr·ATR,
target = entry + target_atr·ATR (mirrored for shorts). From the entry bar on, each bar is checked
intrabar on high/low: a position held into a bar whose open is already beyond a level exits at
the open (a gap); otherwise a touched stop exits at the stop and a touched target at the target;
when both are touched in one bar the stop wins. Actions invalid for the position (CLOSE_LONG while
flat, BUY_LONG while short, ...) are masked: they do nothing, like HOLD. Every fill pays slippage
against the trade, fees × traded value and the fixed fee; shorts pay ``borrow_rate`` per bar on
their value.

Sizing (``position_sizing_method``): ``fixed_fraction`` buys quantity × equity; ``volatility_adjusted``
risks ``risk_per_trade`` × equity between entry and stop (shares = risk / (stop_atr · ATR)),
capped at quantity × equity. Both are capped at ``max_position_size`` × equity: no leverage beyond
config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from hrm_core.config import TradingConfig
from hrm_core.model.heads import ACTIONS
from hrm_core.sim.execution import fill

EXIT_REASONS = ("", "signal", "stop", "target", "end")


@numba.njit(cache=True)
def _record(ledger, row, entry_bar, exit_bar, shares, entry, exit_price, fees, reason):
    ledger[row, 0], ledger[row, 1], ledger[row, 2], ledger[row, 3] = entry_bar, exit_bar, shares, entry
    ledger[row, 4], ledger[row, 5], ledger[row, 6] = exit_price, fees, reason


@numba.njit(cache=True)
def _run(
    open_,
    high,
    low,
    close,
    atr,
    action,
    quantity,
    stop_atr,
    target_atr,
    init_cash,
    fees,
    fixed_fees,
    slippage,
    borrow_rate,
    max_size,
    volatility_adjusted,
    risk_per_trade,
):
    n = close.shape[0]
    cash = np.empty(n)
    position = np.empty(n)
    # trade ledger: entry bar, exit bar, shares (signed), entry price, exit price, fees, exit reason
    ledger = np.zeros((n, 7))
    trades = 0
    c, shares, entry, stop, target, trade_fees, entry_bar = init_cash, 0.0, 0.0, 0.0, 0.0, 0.0, -1
    pending_shares, pending_stop, pending_target = 0.0, 0.0, 0.0
    for t in range(n):
        held_before_open = shares != 0.0
        if pending_shares != 0.0:  # the previous decision fills at this open
            px, fee, c = fill(pending_shares, open_[t], c, fees, fixed_fees, slippage)
            if shares == 0.0:  # an entry
                entry, entry_bar, trade_fees = px, t, fee
                d = 1.0 if pending_shares > 0 else -1.0
                stop, target = px - d * pending_stop, px + d * pending_target
                shares = pending_shares
            else:  # a close
                _record(ledger, trades, entry_bar, t, shares, entry, px, trade_fees + fee, 1.0)
                trades += 1
                shares = 0.0
            pending_shares = 0.0
        if shares != 0.0:  # intrabar stop / target
            d = 1.0 if shares > 0 else -1.0
            level, reason = 0.0, 0.0
            gap_stop = held_before_open and d * (open_[t] - stop) <= 0
            gap_target = held_before_open and d * (open_[t] - target) >= 0
            if gap_stop or gap_target:
                level, reason = open_[t], 2.0 if gap_stop else 3.0
            elif (d > 0 and low[t] <= stop) or (d < 0 and high[t] >= stop):
                level, reason = stop, 2.0
            elif (d > 0 and high[t] >= target) or (d < 0 and low[t] <= target):
                level, reason = target, 3.0
            if reason > 0:
                px, fee, c = fill(-shares, level, c, fees, fixed_fees, slippage)
                _record(ledger, trades, entry_bar, t, shares, entry, px, trade_fees + fee, reason)
                trades += 1
                shares = 0.0
        if shares < 0:
            c -= borrow_rate * -shares * close[t]
        equity = c + shares * close[t]
        a = action[t]
        if t < n - 1:
            if shares == 0.0 and (a == 0 or a == 1):  # BUY_LONG / SELL_SHORT
                size = quantity[t] * equity / close[t]
                if volatility_adjusted and stop_atr[t] * atr[t] > 0:
                    size = min(size, risk_per_trade * equity / (stop_atr[t] * atr[t]))
                size = min(size, max_size * equity / close[t])
                pending_shares = size if a == 0 else -size
                pending_stop, pending_target = stop_atr[t] * atr[t], target_atr[t] * atr[t]
            elif (a == 2 and shares > 0) or (a == 3 and shares < 0):  # CLOSE_LONG / CLOSE_SHORT
                pending_shares = -shares
        elif shares != 0.0:  # the last bar: mark the open trade at its close
            _record(ledger, trades, entry_bar, t, shares, entry, close[t], trade_fees, 4.0)
            trades += 1
        cash[t] = c
        position[t] = shares
    return cash, position, ledger[:trades]


@dataclass
class DecisionResult:
    """Per bar: cash, shares held (after the bar's fills), equity at the close; and the trades."""

    cash: pd.Series
    position: pd.Series
    equity: pd.Series
    trades: pd.DataFrame  # entry_bar, exit_bar, shares, entry_price, exit_price, fees, pnl, exit

    @property
    def returns(self) -> pd.Series:
        return self.equity.pct_change().fillna(self.equity.iloc[0] / self.initial - 1)

    initial: float = 0.0


def run_decisions(
    bars: pd.DataFrame,
    decisions: pd.DataFrame,
    trading: TradingConfig,
) -> DecisionResult:
    """Execute one decision per bar. ``bars``: open, high, low, close, atr (ATR in price units).
    ``decisions``: action (name or index), quantity (fraction of equity), stop_loss and
    take_profit (ATR multiples)."""
    n = len(bars)
    if len(decisions) != n:
        raise ValueError(f"run_decisions: {len(decisions)} decisions for {n} bars; give one per bar")
    action = decisions["action"].map(lambda a: ACTIONS.index(a) if isinstance(a, str) else int(a))
    action = action.to_numpy(np.int64)
    quantity, stop_atr, target_atr = (
        decisions[k].to_numpy(float) for k in ("quantity", "stop_loss", "take_profit")
    )
    _reject(action, quantity, stop_atr, target_atr, bars["atr"].to_numpy(float))
    cash, position, ledger = _run(
        *(bars[k].to_numpy(float) for k in ("open", "high", "low", "close", "atr")),
        action,
        quantity,
        stop_atr,
        target_atr,
        trading.initial_capital,
        trading.commission,
        trading.fixed_fee,
        trading.slippage,
        trading.borrow_rate,
        trading.max_position_size,
        trading.position_sizing_method == "volatility_adjusted",
        trading.risk_per_trade,
    )
    close = bars["close"].to_numpy(float)
    trades = pd.DataFrame(
        ledger, columns=["entry_bar", "exit_bar", "shares", "entry_price", "exit_price", "fees", "exit"]
    )
    trades = trades.astype({"entry_bar": int, "exit_bar": int})
    trades["pnl"] = trades["shares"] * (trades["exit_price"] - trades["entry_price"]) - trades["fees"]
    trades["exit"] = [EXIT_REASONS[int(r)] for r in trades["exit"]]
    index = pd.Index(bars["ts"]) if "ts" in bars else pd.RangeIndex(n)
    return DecisionResult(
        cash=pd.Series(cash, index=index),
        position=pd.Series(position, index=index),
        equity=pd.Series(cash + position * close, index=index),
        trades=trades,
        initial=trading.initial_capital,
    )


def _reject(action, quantity, stop_atr, target_atr, atr) -> None:
    """Refuse decisions no policy should output, naming the first bad bar."""
    checks = [
        ((action < 0) | (action >= len(ACTIONS)), "action must be one of " + ", ".join(ACTIONS)),
        (~np.isfinite(quantity) | (quantity < 0), "quantity must be finite and ≥ 0"),
        (~np.isfinite(stop_atr) | (stop_atr <= 0), "stop_loss must be a finite ATR multiple > 0"),
        (~np.isfinite(target_atr) | (target_atr <= 0), "take_profit must be a finite ATR multiple > 0"),
        (~np.isfinite(atr) | (atr < 0), "atr must be finite and ≥ 0"),
    ]
    for bad, rule in checks:
        hits = np.flatnonzero(bad)
        if len(hits):
            raise ValueError(f"run_decisions: bar {hits[0]}: {rule}")
