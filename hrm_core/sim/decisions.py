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


# Account state slots (one float64 array, so numba and Python share it); COSTS sums the fees,
# slippage and borrow paid so far.
CASH, SHARES, ENTRY, STOP, TARGET, TRADE_FEES, ENTRY_BAR, PENDING, PENDING_STOP, PENDING_TARGET, COSTS = (
    range(11)
)
STATE_SIZE = 11
# Cost and sizing parameter slots
FEES, FIXED_FEES, SLIPPAGE, BORROW, MAX_SIZE, VOL_ADJUSTED, RISK_PER_TRADE = range(7)


def account_params(trading: TradingConfig) -> np.ndarray:
    """The execution parameters of ``trading`` as the engine reads them."""
    return np.array(
        [
            trading.commission,
            trading.fixed_fee,
            trading.slippage,
            trading.borrow_rate,
            trading.max_position_size,
            float(trading.position_sizing_method == "volatility_adjusted"),
            trading.risk_per_trade,
        ]
    )


@numba.njit(cache=True)
def _write_trade(trade, entry_bar, exit_bar, shares, entry, exit_price, fees, reason):
    """A closed trade: entry bar, exit bar, shares, entry price, exit price, fees, exit reason."""
    trade[0], trade[1], trade[2], trade[3] = entry_bar, exit_bar, shares, entry
    trade[4], trade[5], trade[6] = exit_price, fees, reason


@numba.njit(cache=True)
def new_account(init_cash: float) -> np.ndarray:
    state = np.zeros(STATE_SIZE)
    state[CASH] = init_cash
    state[ENTRY_BAR] = -1.0
    return state


@numba.njit(cache=True)
def _pay(state, params, size, price):
    """Fill ``size`` shares at ``price`` from the account's cash; returns (fill price, fee)."""
    px, fee, state[CASH] = fill(size, price, state[CASH], params[FEES], params[FIXED_FEES], params[SLIPPAGE])
    state[COSTS] += fee + abs(size * (px - price))
    return px, fee


@numba.njit(cache=True)
def run_bar(state, params, t, open_, high, low, close, trade):
    """Bar t's events: the pending order fills at the open, then stop / target intrabar, then
    borrow at the close. Writes a closed trade into ``trade`` (entry bar, exit bar, shares, entry,
    exit price, fees, reason) and returns True when one closed."""
    closed = False
    held_before_open = state[SHARES] != 0.0
    pending = state[PENDING]
    if pending != 0.0:
        px, fee = _pay(state, params, pending, open_)
        if state[SHARES] == 0.0:  # an entry
            d = 1.0 if pending > 0 else -1.0
            state[ENTRY], state[ENTRY_BAR], state[TRADE_FEES] = px, t, fee
            state[STOP], state[TARGET] = px - d * state[PENDING_STOP], px + d * state[PENDING_TARGET]
            state[SHARES] = pending
        else:  # a signal close
            _write_trade(
                trade, state[ENTRY_BAR], t, state[SHARES], state[ENTRY], px, state[TRADE_FEES] + fee, 1.0
            )
            state[SHARES], closed = 0.0, True
        state[PENDING] = 0.0
    shares = state[SHARES]
    if shares != 0.0:
        d = 1.0 if shares > 0 else -1.0
        stop, target = state[STOP], state[TARGET]
        level, reason = 0.0, 0.0
        gap_stop = held_before_open and d * (open_ - stop) <= 0
        gap_target = held_before_open and d * (open_ - target) >= 0
        if gap_stop or gap_target:
            level, reason = open_, 2.0 if gap_stop else 3.0
        elif (d > 0 and low <= stop) or (d < 0 and high >= stop):
            level, reason = stop, 2.0
        elif (d > 0 and high >= target) or (d < 0 and low <= target):
            level, reason = target, 3.0
        if reason > 0:
            px, fee = _pay(state, params, -shares, level)
            _write_trade(
                trade, state[ENTRY_BAR], t, shares, state[ENTRY], px, state[TRADE_FEES] + fee, reason
            )
            state[SHARES], closed = 0.0, True
    if state[SHARES] < 0:
        borrow = params[BORROW] * -state[SHARES] * close
        state[CASH] -= borrow
        state[COSTS] += borrow
    return closed


@numba.njit(cache=True)
def decide(state, params, close, atr, action, quantity, stop_atr, target_atr):
    """The decision at a bar's close becomes the order that fills at the next open. Entries are
    sized from equity at this close; actions invalid for the position do nothing."""
    shares = state[SHARES]
    equity = state[CASH] + shares * close
    if shares == 0.0 and (action == 0 or action == 1):  # BUY_LONG / SELL_SHORT
        size = quantity * equity / close
        if params[VOL_ADJUSTED] > 0 and stop_atr * atr > 0:
            size = min(size, params[RISK_PER_TRADE] * equity / (stop_atr * atr))
        size = min(size, params[MAX_SIZE] * equity / close)
        state[PENDING] = size if action == 0 else -size
        state[PENDING_STOP], state[PENDING_TARGET] = stop_atr * atr, target_atr * atr
    elif (action == 2 and shares > 0) or (action == 3 and shares < 0):  # CLOSE_LONG / CLOSE_SHORT
        state[PENDING] = -shares


@numba.njit(cache=True)
def _run(open_, high, low, close, atr, action, quantity, stop_atr, target_atr, init_cash, params):
    n = close.shape[0]
    cash = np.empty(n)
    position = np.empty(n)
    ledger = np.zeros((n, 7))
    trades = 0
    state = new_account(init_cash)
    for t in range(n):
        if run_bar(state, params, t, open_[t], high[t], low[t], close[t], ledger[trades]):
            trades += 1
        if t < n - 1:
            decide(state, params, close[t], atr[t], action[t], quantity[t], stop_atr[t], target_atr[t])
        elif state[SHARES] != 0.0:  # the last bar: mark the open trade at its close
            s = state
            _write_trade(ledger[trades], s[ENTRY_BAR], t, s[SHARES], s[ENTRY], close[t], s[TRADE_FEES], 4.0)
            trades += 1
        cash[t] = state[CASH]
        position[t] = state[SHARES]
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
        float(trading.initial_capital),
        account_params(trading),
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
