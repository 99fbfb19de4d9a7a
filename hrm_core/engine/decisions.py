"""The PnL engine: the seed's actions with quantity, stop and target, executed bar by bar. Backtests,
the gym and vector environments and RL run it; the training loss runs its torch twin
(``engine.twin``), tested equal to it; vectorbt's ``Portfolio.from_orders`` is tested equal to it
fill by fill (the conventions are vectorbt's: slippage moves the fill price against the trade, each
fill pays fees × traded value plus the fixed fee, cash changes by −size·price − fee, and the
account's value at a close is cash + shares · close).

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
    HOLD,
    SELL_SHORT,
)

# The account an engine run carries from bar to bar (one record; numba and Python share it). costs
# sums the fees, slippage and borrow paid so far; trade_cash is the open trade's cash flows,
# trade_size its largest signed position; pending is the order that fills at the next open.
ACCOUNT_DT = np.dtype(
    [
        ("cash", np.float64),
        ("shares", np.float64),
        ("entry_price", np.float64),
        ("stop", np.float64),  # NaN: no level
        ("target", np.float64),
        ("trade_fees", np.float64),
        ("entry_bar", np.int64),
        ("pending", np.float64),
        ("pending_stop", np.float64),  # price distances the pending entry's levels get
        ("pending_target", np.float64),
        ("costs", np.float64),
        ("trade_cash", np.float64),
        ("trade_size", np.float64),
    ],
    align=True,
)
# The costs and sizing an engine run charges (``account_params``).
PARAMS_DT = np.dtype(
    [
        ("fees", np.float64),  # × traded value
        ("fixed_fees", np.float64),  # per fill
        ("slippage", np.float64),  # fraction of the price, against the trade
        ("borrow", np.float64),  # per bar on a short's value
        ("max_size", np.float64),  # the largest exposure, fraction of equity
    ],
    align=True,
)
# One closed (or marked) trade of the ledger.
TRADE_DT = np.dtype(
    [
        ("entry_bar", np.int64),
        ("exit_bar", np.int64),
        ("shares", np.float64),  # the largest signed position
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("fees", np.float64),
        ("exit", np.int64),  # index into EXIT_REASONS
        ("pnl", np.float64),
    ],
    align=True,
)
TRADE_FIELDS = TRADE_DT.names
MAX_CLOSED_PER_BAR = 2
"""A flip at the open closes a trade; a stop or target can close the new one in the same bar."""


def account_params(trading: TradingConfig) -> np.void:
    """The execution parameters of ``trading`` as the engine reads them (a ``PARAMS_DT`` record)."""
    values = (
        trading.commission,
        trading.fixed_fee,
        trading.slippage,
        trading.borrow_rate,
        trading.max_position_size,
    )
    return np.array([values], dtype=PARAMS_DT)[0]


def new_accounts(n: int, init_cash: float) -> np.ndarray:
    """[n] fresh ``ACCOUNT_DT`` records: all cash, flat, no trade, nothing pending."""
    accounts = np.zeros(n, dtype=ACCOUNT_DT)
    accounts["cash"] = init_cash
    accounts["entry_bar"] = -1
    return accounts


def exit_levels(trading: TradingConfig) -> tuple[float, float]:
    """Stop and target distances (ATRs) a policy's entries get: the configured rule, or none."""
    if trading.exit_rules == "atr":
        return trading.risk_multiplier, trading.reward_multiplier
    return 0.0, 0.0


@numba.njit(cache=True)
def fill(size: float, price: float, cash: float, fees: float, fixed_fees: float, slippage: float):
    """Execute ``size`` shares (+ buy, − sell) at ``price``: returns (fill price, fee, new cash)."""
    filled = price * (1.0 + slippage) if size > 0 else price * (1.0 - slippage)
    fee = abs(size) * filled * fees + fixed_fees
    return filled, fee, cash - size * filled - fee


@numba.njit(cache=True)
def _close_trade(account, trade, t, price, fee, reason):
    """Close the open trade at ``price`` (its last fill, already paid) into the ``trade`` record."""
    account.trade_fees += fee
    trade.entry_bar, trade.exit_bar, trade.shares = account.entry_bar, t, account.trade_size
    trade.entry_price, trade.exit_price, trade.fees = account.entry_price, price, account.trade_fees
    trade.exit, trade.pnl = reason, account.trade_cash


@numba.njit(cache=True)
def affordable(size: float, price: float, cash: float, fees: float, fixed_fees: float, slippage: float):
    """The part of a buy of ``size`` shares at ``price`` that ``cash`` pays for, fees included, as
    vectorbt's ``buy_nb`` fills it: all of it when cash suffices, else what the cash less the fixed
    fee buys, and nothing when that is nothing. Sells are never cut (they raise cash)."""
    if size <= 0.0:
        return size
    px = price * (1.0 + slippage)
    if size * px * (1.0 + fees) + fixed_fees <= cash:
        return size
    return max(cash - fixed_fees, 0.0) / (1.0 + fees) / px


@numba.njit(cache=True)
def _pay(account, params, size, price):
    """Fill ``size`` shares at ``price`` from the account's cash; returns (fill price, fee)."""
    px, fee, account.cash = fill(size, price, account.cash, params.fees, params.fixed_fees, params.slippage)
    account.costs += fee + abs(size * (px - price))
    return px, fee


@numba.njit(cache=True)
def _fill_pending(account, params, t, open_, trade):
    """The pending order fills at this open: it may close the trade (returns True), resize it, open
    one, or both close and open (a flip, its fee split pro rata)."""
    pending = account.pending
    account.pending = 0.0
    cut = False
    if params.max_size <= 1.0:  # no leverage: a buy the open made dearer is cut to what cash buys
        size = affordable(pending, open_, account.cash, params.fees, params.fixed_fees, params.slippage)
        if size == 0.0:
            return False
        cut, pending = size != pending, size
    px, fee = _pay(account, params, pending, open_)
    if cut:  # spent all of it, as vectorbt books it (not a rounding error below zero)
        account.cash = 0.0
    shares = account.shares
    closed = False
    rest, rest_fee = pending, fee
    if shares != 0.0 and (shares + pending == 0.0 or (shares + pending) * shares < 0):
        part_fee = fee * abs(shares / pending)
        account.trade_cash += shares * px - part_fee
        _close_trade(account, trade, t, px, part_fee, EXIT_SIGNAL)
        closed = True
        rest, rest_fee, shares = pending + shares, fee - part_fee, 0.0
    if rest != 0.0:
        if shares == 0.0:  # an entry: a new trade with its own levels
            d = 1.0 if rest > 0 else -1.0
            account.entry_price, account.entry_bar, account.trade_fees = px, t, 0.0
            account.trade_cash, account.trade_size = 0.0, 0.0
            account.stop = px - d * account.pending_stop if account.pending_stop > 0 else np.nan
            account.target = px + d * account.pending_target if account.pending_target > 0 else np.nan
        account.trade_fees += rest_fee
        account.trade_cash -= rest * px + rest_fee
        shares += rest
        if abs(shares) > abs(account.trade_size):
            account.trade_size = shares
    account.shares = shares
    return closed


@numba.njit(cache=True, inline="always")  # inlined: half the per-bar cost
def run_bar(account, params, t, open_, high, low, close, trades, first):
    """Bar t's events: the pending order fills at the open, then stop / target intrabar, then
    borrow at the close. Writes the trades that closed into ``trades[first]`` on (``TRADE_DT``
    records) and returns how many: two when a flip at the open closes one and a stop or target
    closes the new one in the same bar. Most bars have no order to fill, no level to touch and no
    borrow to pay: nothing can happen in them, and they return at once."""
    shares = account.shares
    if account.pending == 0.0 and (
        shares == 0.0
        or (np.isnan(account.stop) and np.isnan(account.target) and (shares > 0.0 or params.borrow == 0.0))
    ):
        return 0
    closed = 0
    held_before_open = shares != 0.0
    if account.pending != 0.0:
        closed = 1 if _fill_pending(account, params, t, open_, trades[first]) else 0
    shares = account.shares
    if shares != 0.0:
        d = 1.0 if shares > 0 else -1.0
        stop, target = account.stop, account.target  # NaN: no level, never touched
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
            px, fee = _pay(account, params, -shares, level)
            account.trade_cash += shares * px - fee
            _close_trade(account, trades[first + closed], t, px, fee, reason)
            account.shares, closed = 0.0, closed + 1
    if account.shares < 0:
        borrow = params.borrow * -account.shares * close
        account.cash -= borrow
        account.costs += borrow
        account.trade_cash -= borrow
    return closed


@numba.njit(cache=True, inline="always")  # inlined: half the per-bar cost
def decide(account, params, close, atr, action, quantity, stop_atr, target_atr):
    """The decision at a bar's close becomes the order that fills at the next open, sized from
    equity at this close. Stop and target distances (ATRs, 0 = none) apply to a new trade."""
    if action == HOLD:
        return
    shares = account.shares
    equity = account.cash + shares * close
    size = min(quantity, params.max_size) * equity / close
    if action == BUY_LONG:
        target = size
    elif action == SELL_SHORT:
        target = -size
    elif (action == CLOSE_LONG and shares > 0) or (action == CLOSE_SHORT and shares < 0):
        target = 0.0
    else:  # HOLD, or a close that does not match the position
        return
    if target != shares:
        account.pending = target - shares
        account.pending_stop, account.pending_target = stop_atr * atr, target_atr * atr


@numba.njit(cache=True)
def mark_open_trade(account, trade, bar, close):
    """Write the position still open into the ``trade`` record, marked at ``close`` (exit "end");
    returns False when flat."""
    if account.shares == 0.0:
        return False
    trade.entry_bar, trade.exit_bar, trade.shares = account.entry_bar, bar, account.trade_size
    trade.entry_price, trade.exit_price, trade.fees = account.entry_price, close, account.trade_fees
    trade.exit, trade.pnl = EXIT_END, account.trade_cash + account.shares * close
    return True


@numba.njit(cache=True)
def _run(open_, high, low, close, atr, action, quantity, stop_atr, target_atr, account, params, ledger):
    n = close.shape[0]
    cash = np.empty(n)
    position = np.empty(n)
    trades = 0
    for t in range(n):
        trades += run_bar(account, params, t, open_[t], high[t], low[t], close[t], ledger, trades)
        if t < n - 1:
            decide(account, params, close[t], atr[t], action[t], quantity[t], stop_atr[t], target_atr[t])
        elif mark_open_trade(account, ledger[trades], t, close[t]):  # the last bar: mark it at its close
            trades += 1
        cash[t] = account.cash
        position[t] = account.shares
    return cash, position, trades


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
    action = action_codes(decisions["action"])
    quantity, stop_atr, target_atr = (
        decisions[k].to_numpy(float) for k in ("quantity", "stop_loss", "take_profit")
    )
    _reject(action, quantity, stop_atr, target_atr, bars["atr"].to_numpy(float))
    account = new_accounts(1, float(trading.initial_capital))
    # every trade was opened by an entry decision; run_bar may point one bar's slots past the last
    entries = np.count_nonzero((action == BUY_LONG) | (action == SELL_SHORT))
    ledger = np.empty(entries + MAX_CLOSED_PER_BAR, dtype=TRADE_DT)
    cash, position, count = _run(
        *(bars[k].to_numpy(float) for k in ("open", "high", "low", "close", "atr")),
        action,
        quantity,
        stop_atr,
        target_atr,
        account[0],
        account_params(trading),
        ledger,
    )
    close = bars["close"].to_numpy(float)
    trades = ledger_frame(ledger[:count])
    index = pd.Index(bars["ts"]) if "ts" in bars else pd.RangeIndex(n)
    return DecisionResult(
        cash=pd.Series(cash, index=index),
        position=pd.Series(position, index=index),
        equity=pd.Series(cash + position * close, index=index),
        trades=trades,
        initial=trading.initial_capital,
        costs=float(account[0]["costs"]),
    )


def action_codes(actions: pd.Series | np.ndarray) -> np.ndarray:
    """Actions as ``ACTIONS`` indices, vectorised: integer codes pass as they are, names (or codes
    written as numbers in an object column) are looked up; anything else becomes -1, which
    ``_reject`` refuses."""
    values = np.asarray(actions)
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values))
        return np.where(whole, np.nan_to_num(values), -1).astype(np.int64)
    codes = pd.Categorical(values, categories=ACTIONS).codes.astype(np.int64)
    unknown = codes < 0
    if unknown.any():  # numbers in an object column (e.g. read from JSON)
        numbers = pd.to_numeric(pd.Series(values[unknown]), errors="coerce").to_numpy(float)
        codes[unknown] = action_codes(numbers)
    return codes


def ledger_frame(records: np.ndarray | list) -> pd.DataFrame:
    """``TRADE_DT`` records as a frame with named exit reasons."""
    flat = (
        [np.asarray(r, dtype=TRADE_DT).reshape(-1) for r in records]
        if isinstance(records, list)
        else [records]
    )
    trades = pd.DataFrame(np.concatenate(flat or [np.zeros(0, TRADE_DT)]), columns=list(TRADE_FIELDS))
    trades["exit"] = np.asarray(EXIT_REASONS, dtype=object)[trades["exit"].to_numpy()]
    return trades


def _reject(action, quantity, stop_atr, target_atr, atr) -> None:
    """Refuse decisions no policy should output, naming the first bad bar. Each column's range is
    checked by its min and max (a NaN fails both); only a column that fails is searched."""
    finite = np.finfo(np.float64).max
    checks = [
        (action, len(ACTIONS) - 1, "action must be one of " + ", ".join(ACTIONS)),
        (quantity, finite, "quantity must be finite and ≥ 0"),
        (stop_atr, finite, "stop_loss must be a finite ATR multiple ≥ 0 (0: none)"),
        (target_atr, finite, "take_profit must be a finite ATR multiple ≥ 0 (0: none)"),
        (atr, finite, "atr must be finite and ≥ 0"),
    ]
    for values, highest, rule in checks:
        if len(values) and not (values.min() >= 0 and values.max() <= highest):
            bad = ~((values >= 0) & (values <= highest))
            raise ValueError(f"run_decisions: bar {int(np.argmax(bad))}: {rule}")
