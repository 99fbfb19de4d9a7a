"""Executing trading decisions: the seed's actions with quantity, stop and target, bar by bar.

The decision of bar t (made at its close) fills at bar t+1's open. BUY_LONG q and SELL_SHORT q
move the position to +q / −q of equity at that close (an entry from flat, a resize, or a flip);
CLOSE_LONG / CLOSE_SHORT go flat and are masked (do nothing) when the position is not long / short;
HOLD does nothing. ``hrm_core.model.exposure`` derives these actions from a target exposure.

Stops and targets are rules, not model outputs: a stop or target distance of 0 ATRs sets no level
(the default, ``trading.exit_rules: none``). An entry's levels are set from its fill price and the
ATR known at the decision: long stop = entry − stop_atr·ATR, target = entry + target_atr·ATR
(mirrored for shorts). From the entry bar on, each bar is checked intrabar on high/low: a position
held into a bar whose open is already beyond a level exits at the open (a gap); otherwise a touched
stop exits at the stop and a touched target at the target; when both are touched in one bar the
stop wins. Every fill pays slippage against the trade, fees × traded value and the fixed fee;
shorts pay ``borrow_rate`` per bar on their value. Quantities are capped at ``max_position_size``:
no leverage beyond config.

The ledger has one row per trade, from leaving flat to returning flat (a flip closes one trade
and opens the next, its fill split pro rata): entry and exit bars, the largest signed position,
first and last fill prices, fees, exit reason, and the PnL of all its cash flows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from hrm_core.core.config import TradingConfig
from hrm_core.core.vocabulary import (
    ACTIONS,
    BUY_LONG,
    CLOSE_LONG,
    CLOSE_SHORT,
    EXIT_END,
    EXIT_REASONS,
    EXIT_SIGNAL,
    EXIT_STOP,
    EXIT_TARGET,
    SELL_SHORT,
)
from hrm_core.engine.execution import fill

# Account state slots (one float64 array, so numba and Python share it). COSTS sums the fees,
# slippage and borrow paid so far; TRADE_CASH is the open trade's cash flows, TRADE_SIZE its
# largest signed position.
(
    CASH,
    SHARES,
    ENTRY,
    STOP,
    TARGET,
    TRADE_FEES,
    ENTRY_BAR,
    PENDING,
    PENDING_STOP,
    PENDING_TARGET,
    COSTS,
    TRADE_CASH,
    TRADE_SIZE,
) = range(13)
STATE_SIZE = 13
# Cost and sizing parameter slots
FEES, FIXED_FEES, SLIPPAGE, BORROW, MAX_SIZE = range(5)
# Trade ledger row fields
TRADE_FIELDS = ("entry_bar", "exit_bar", "shares", "entry_price", "exit_price", "fees", "exit", "pnl")


def account_params(trading: TradingConfig) -> np.ndarray:
    """The execution parameters of ``trading`` as the engine reads them."""
    return np.array(
        [
            trading.commission,
            trading.fixed_fee,
            trading.slippage,
            trading.borrow_rate,
            trading.max_position_size,
        ]
    )


def exit_levels(trading: TradingConfig) -> tuple[float, float]:
    """Stop and target distances (ATRs) a policy's entries get: the configured rule, or none."""
    if trading.exit_rules == "atr":
        return trading.risk_multiplier, trading.reward_multiplier
    return 0.0, 0.0


@numba.njit(cache=True)
def _close_trade(state, trade, t, price, fee, reason):
    """Close the open trade at ``price`` (its last fill, already paid) into a ``TRADE_FIELDS`` row."""
    state[TRADE_FEES] += fee
    trade[0], trade[1], trade[2], trade[3] = state[ENTRY_BAR], t, state[TRADE_SIZE], state[ENTRY]
    trade[4], trade[5], trade[6], trade[7] = price, state[TRADE_FEES], reason, state[TRADE_CASH]


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
def _fill_pending(state, params, t, open_, trade):
    """The pending order fills at this open: it may close the trade (returns True), resize it, open
    one, or both close and open (a flip, its fee split pro rata)."""
    pending = state[PENDING]
    state[PENDING] = 0.0
    px, fee = _pay(state, params, pending, open_)
    shares = state[SHARES]
    closed = False
    rest, rest_fee = pending, fee
    if shares != 0.0 and (shares + pending == 0.0 or (shares + pending) * shares < 0):
        part_fee = fee * abs(shares / pending)
        state[TRADE_CASH] += shares * px - part_fee
        _close_trade(state, trade, t, px, part_fee, EXIT_SIGNAL)
        closed = True
        rest, rest_fee, shares = pending + shares, fee - part_fee, 0.0
    if rest != 0.0:
        if shares == 0.0:  # an entry: a new trade with its own levels
            d = 1.0 if rest > 0 else -1.0
            state[ENTRY], state[ENTRY_BAR], state[TRADE_FEES] = px, t, 0.0
            state[TRADE_CASH], state[TRADE_SIZE] = 0.0, 0.0
            state[STOP] = px - d * state[PENDING_STOP] if state[PENDING_STOP] > 0 else np.nan
            state[TARGET] = px + d * state[PENDING_TARGET] if state[PENDING_TARGET] > 0 else np.nan
        state[TRADE_FEES] += rest_fee
        state[TRADE_CASH] -= rest * px + rest_fee
        shares += rest
        if abs(shares) > abs(state[TRADE_SIZE]):
            state[TRADE_SIZE] = shares
    state[SHARES] = shares
    return closed


@numba.njit(cache=True)
def run_bar(state, params, t, open_, high, low, close, trade):
    """Bar t's events: the pending order fills at the open, then stop / target intrabar, then
    borrow at the close. Writes a closed trade into ``trade`` (``TRADE_FIELDS``) and returns True
    when one closed."""
    closed = False
    held_before_open = state[SHARES] != 0.0
    if state[PENDING] != 0.0:
        closed = _fill_pending(state, params, t, open_, trade)
    shares = state[SHARES]
    if shares != 0.0:
        d = 1.0 if shares > 0 else -1.0
        stop, target = state[STOP], state[TARGET]  # NaN: no level, never touched
        level, reason = 0.0, 0.0
        gap_stop = held_before_open and d * (open_ - stop) <= 0
        gap_target = held_before_open and d * (open_ - target) >= 0
        if gap_stop or gap_target:
            level, reason = open_, EXIT_STOP if gap_stop else EXIT_TARGET
        elif (d > 0 and low <= stop) or (d < 0 and high >= stop):
            level, reason = stop, EXIT_STOP
        elif (d > 0 and high >= target) or (d < 0 and low <= target):
            level, reason = target, EXIT_TARGET
        if reason > 0:
            px, fee = _pay(state, params, -shares, level)
            state[TRADE_CASH] += shares * px - fee
            _close_trade(state, trade, t, px, fee, reason)
            state[SHARES], closed = 0.0, True
    if state[SHARES] < 0:
        borrow = params[BORROW] * -state[SHARES] * close
        state[CASH] -= borrow
        state[COSTS] += borrow
        state[TRADE_CASH] -= borrow
    return closed


@numba.njit(cache=True)
def decide(state, params, close, atr, action, quantity, stop_atr, target_atr):
    """The decision at a bar's close becomes the order that fills at the next open, sized from
    equity at this close. Stop and target distances (ATRs, 0 = none) apply to a new trade."""
    shares = state[SHARES]
    equity = state[CASH] + shares * close
    size = min(quantity, params[MAX_SIZE]) * equity / close
    if action == BUY_LONG:
        target = size
    elif action == SELL_SHORT:
        target = -size
    elif (action == CLOSE_LONG and shares > 0) or (action == CLOSE_SHORT and shares < 0):
        target = 0.0
    else:  # HOLD, or a close that does not match the position
        return
    if target != shares:
        state[PENDING] = target - shares
        state[PENDING_STOP], state[PENDING_TARGET] = stop_atr * atr, target_atr * atr


@numba.njit(cache=True)
def mark_open_trade(state, trade, bar, close):
    """Write the position still open into ``trade`` as a ``TRADE_FIELDS`` row marked at ``close``
    (exit "end"); returns False when flat."""
    if state[SHARES] == 0.0:
        return False
    trade[0], trade[1], trade[2], trade[3] = state[ENTRY_BAR], bar, state[TRADE_SIZE], state[ENTRY]
    trade[4], trade[5], trade[6] = close, state[TRADE_FEES], EXIT_END
    trade[7] = state[TRADE_CASH] + state[SHARES] * close
    return True


@numba.njit(cache=True)
def _run(open_, high, low, close, atr, action, quantity, stop_atr, target_atr, init_cash, params):
    n = close.shape[0]
    cash = np.empty(n)
    position = np.empty(n)
    ledger = np.zeros((n, len(TRADE_FIELDS)))
    trades = 0
    state = new_account(init_cash)
    for t in range(n):
        if run_bar(state, params, t, open_[t], high[t], low[t], close[t], ledger[trades]):
            trades += 1
        if t < n - 1:
            decide(state, params, close[t], atr[t], action[t], quantity[t], stop_atr[t], target_atr[t])
        elif mark_open_trade(state, ledger[trades], t, close[t]):  # the last bar: mark it at its close
            trades += 1
        cash[t] = state[CASH]
        position[t] = state[SHARES]
    return cash, position, ledger[:trades], state[COSTS]


@dataclass
class DecisionResult:
    """Per bar: cash, shares held (after the bar's fills), equity at the close; and the trades."""

    cash: pd.Series
    position: pd.Series
    equity: pd.Series
    trades: pd.DataFrame  # TRADE_FIELDS
    initial: float = 0.0
    costs: float = 0.0  # fees, slippage and borrow paid

    @property
    def returns(self) -> pd.Series:
        return self.equity.pct_change().fillna(self.equity.iloc[0] / self.initial - 1)


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
    cash, position, ledger, costs = _run(
        *(bars[k].to_numpy(float) for k in ("open", "high", "low", "close", "atr")),
        action,
        quantity,
        stop_atr,
        target_atr,
        float(trading.initial_capital),
        account_params(trading),
    )
    close = bars["close"].to_numpy(float)
    trades = ledger_frame(ledger)
    index = pd.Index(bars["ts"]) if "ts" in bars else pd.RangeIndex(n)
    return DecisionResult(
        cash=pd.Series(cash, index=index),
        position=pd.Series(position, index=index),
        equity=pd.Series(cash + position * close, index=index),
        trades=trades,
        initial=trading.initial_capital,
        costs=float(costs),
    )


def ledger_frame(rows: np.ndarray | list) -> pd.DataFrame:
    """Engine trade rows as a frame with integer bars and named exit reasons."""
    trades = pd.DataFrame(np.asarray(rows, dtype=float).reshape(-1, len(TRADE_FIELDS)), columns=TRADE_FIELDS)
    trades = trades.astype({"entry_bar": int, "exit_bar": int})
    trades["exit"] = [EXIT_REASONS[int(r)] for r in trades["exit"]]
    return trades


def _reject(action, quantity, stop_atr, target_atr, atr) -> None:
    """Refuse decisions no policy should output, naming the first bad bar."""
    checks = [
        ((action < 0) | (action >= len(ACTIONS)), "action must be one of " + ", ".join(ACTIONS)),
        (~np.isfinite(quantity) | (quantity < 0), "quantity must be finite and ≥ 0"),
        (~np.isfinite(stop_atr) | (stop_atr < 0), "stop_loss must be a finite ATR multiple ≥ 0 (0: none)"),
        (
            ~np.isfinite(target_atr) | (target_atr < 0),
            "take_profit must be a finite ATR multiple ≥ 0 (0: none)",
        ),
        (~np.isfinite(atr) | (atr < 0), "atr must be finite and ≥ 0"),
    ]
    for bad, rule in checks:
        hits = np.flatnonzero(bad)
        if len(hits):
            raise ValueError(f"run_decisions: bar {hits[0]}: {rule}")
