"""run_decisions: the execution rules bar by bar on hand-made bars — next-open fills, fees and
slippage, stops and targets intrabar (stop wins), gaps, shorts, borrow, resizes and flips, the
quantity cap and bad input."""

import numpy as np
import pandas as pd
import pytest

from hrm_core.core.config import TradingConfig
from hrm_core.engine.decisions import run_decisions

FREE = TradingConfig(commission=0.0, slippage=0.0, initial_capital=1000.0, max_position_size=1.0)


def make_bars(rows: list[tuple[float, float, float, float]], atr: float = 1.0) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"])
    return frame.assign(atr=atr)


def make_decisions(n: int, at: dict[int, tuple[str, float]], stop: float = 1.0, target: float = 2.0):
    action = ["HOLD"] * n
    quantity = [0.0] * n
    for bar, (name, qty) in at.items():
        action[bar], quantity[bar] = name, qty
    return pd.DataFrame({"action": action, "quantity": quantity, "stop_loss": stop, "take_profit": target})


def test_a_long_fills_next_open_and_exits_at_its_target():
    bars = make_bars(
        [(100, 100, 100, 100), (100, 101, 99.5, 100.5), (101, 102.5, 100.8, 102), (102, 102, 102, 102)]
    )
    result = run_decisions(bars, make_decisions(4, {0: ("BUY_LONG", 0.5)}), FREE)
    trade = result.trades.iloc[0]
    assert (trade.entry_bar, trade.exit_bar, trade.exit) == (1, 2, "target")
    assert trade.shares == pytest.approx(5.0) and trade.entry_price == 100 and trade.exit_price == 102
    assert result.position.tolist() == pytest.approx([0, 5, 0, 0])
    assert result.equity.iloc[-1] == pytest.approx(1010.0) and trade.pnl == pytest.approx(10.0)


def test_the_stop_wins_when_stop_and_target_are_touched_in_one_bar():
    bars = make_bars([(100, 100, 100, 100), (100, 100, 100, 100), (100, 103, 98, 100), (100, 100, 100, 100)])
    trade = run_decisions(bars, make_decisions(4, {0: ("BUY_LONG", 1.0)}), FREE).trades.iloc[0]
    assert (trade.exit, trade.exit_price, trade.exit_bar) == ("stop", 99.0, 2)


def test_a_gap_through_the_stop_fills_at_the_open():
    bars = make_bars([(100, 100, 100, 100), (100, 100.5, 99.5, 100), (97, 97.5, 96, 97), (97, 97, 97, 97)])
    trade = run_decisions(bars, make_decisions(4, {0: ("BUY_LONG", 1.0)}), FREE).trades.iloc[0]
    assert (trade.exit, trade.exit_price) == ("stop", 97.0)


def test_shorts_mirror_stops_and_targets_and_pay_borrow():
    bars = make_bars([(100, 100, 100, 100), (100, 100.5, 99.5, 100), (99, 99.5, 97.5, 98), (98, 98, 98, 98)])
    config = FREE.model_copy(update={"borrow_rate": 0.001})
    result = run_decisions(bars, make_decisions(4, {0: ("SELL_SHORT", 1.0)}), config)
    trade = result.trades.iloc[0]
    assert trade.shares == pytest.approx(-10.0) and (trade.exit, trade.exit_price) == ("target", 98.0)
    borrow = 0.001 * 10 * 100  # one close held short (bar 1)
    assert result.equity.iloc[-1] == pytest.approx(1000 + 20 - borrow)


def test_fees_slippage_and_a_signal_exit():
    bars = make_bars(
        [(100, 100, 100, 100), (100, 100.5, 99.5, 100), (110, 110, 110, 110), (110, 110, 110, 110)]
    )
    config = FREE.model_copy(update={"commission": 0.001, "slippage": 0.01, "fixed_fee": 1.0})
    decisions = make_decisions(4, {0: ("BUY_LONG", 0.5), 1: ("CLOSE_LONG", 0.0)}, stop=50, target=50)
    trade = run_decisions(bars, decisions, config).trades.iloc[0]
    assert (trade.exit, trade.entry_price, trade.exit_price) == (
        "signal",
        pytest.approx(101.0),
        pytest.approx(108.9),
    )
    fees = 5 * 101 * 0.001 + 1 + 5 * 108.9 * 0.001 + 1
    assert trade.fees == pytest.approx(fees) and trade.pnl == pytest.approx(5 * (108.9 - 101) - fees)


def test_masked_closes_do_nothing_buys_resize_sells_flip_and_the_open_trade_is_marked():
    bars = make_bars([(100, 100, 100, 100)] * 6)
    decisions = make_decisions(
        6,
        {0: ("CLOSE_SHORT", 0.3), 1: ("BUY_LONG", 0.3), 2: ("BUY_LONG", 0.6), 3: ("SELL_SHORT", 0.3)},
        stop=0.0,
        target=0.0,  # no levels
    )
    result = run_decisions(bars, decisions, FREE)
    assert result.position.tolist() == pytest.approx([0, 0, 3, 6, -3, -3])
    long, short = result.trades.itertuples()
    assert (long.entry_bar, long.exit_bar, long.shares, long.exit) == (2, 4, 6.0, "signal")
    assert (short.entry_bar, short.exit_bar, short.shares, short.exit) == (4, 5, -3.0, "end")


def test_a_flip_splits_its_fee_and_every_ledger_adds_up_to_the_equity():
    bars = make_bars(
        [(100, 100, 100, 100), (100, 100, 100, 100), (104, 106, 103, 105), (101, 102, 99, 100)] * 3
    )
    config = FREE.model_copy(update={"commission": 0.001, "slippage": 0.001, "borrow_rate": 0.0005})
    plan = {
        0: ("BUY_LONG", 0.5),
        2: ("BUY_LONG", 0.9),
        4: ("SELL_SHORT", 0.7),
        7: ("CLOSE_SHORT", 0),
        9: ("SELL_SHORT", 1.0),
    }
    result = run_decisions(bars, make_decisions(12, plan, stop=0.0, target=0.0), config)
    assert list(result.trades["exit"]) == ["signal", "signal", "end"]
    assert result.trades["pnl"].sum() == pytest.approx(result.equity.iloc[-1] - 1000.0, rel=1e-9)
    assert result.costs > 0


def test_quantities_are_capped_at_the_max_position_size():
    bars = make_bars([(100, 100, 100, 100)] * 3, atr=2.0)
    capped = run_decisions(bars, make_decisions(3, {0: ("BUY_LONG", 5.0)}), FREE)
    assert capped.position.iloc[1] == pytest.approx(10.0)  # max_position_size 1.0: no leverage


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("quantity", np.nan, "quantity"),
        ("quantity", -1.0, "quantity"),
        ("stop_loss", -1.0, "stop_loss"),
        ("take_profit", np.inf, "take_profit"),
        ("action", "BUY", "action"),
    ],
)
def test_bad_decisions_are_errors_that_name_the_bar(column, value, rule):
    bars = make_bars([(100, 100, 100, 100)] * 4)
    decisions = make_decisions(4, {})
    if column == "action":
        decisions["action"] = decisions["action"].astype(object)
        decisions.loc[2, "action"] = 7
    else:
        decisions.loc[2, column] = value
    with pytest.raises(ValueError, match=f"bar 2: {rule}"):
        run_decisions(bars, decisions, FREE)
