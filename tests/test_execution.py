"""simulate_orders: the execution rules on hand-made bars, and fill-by-fill agreement with
vectorbt's Portfolio.from_orders on random long/short order streams."""

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from hrm_core import simulate_orders
from hrm_core.core.config import PolicyConfig, TradingConfig
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.engine.execution import simulate_exposures
from hrm_core.sim.baselines import BASELINES, sma_crossover, time_series_momentum, volatility_targeted


def bars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    return pd.DataFrame(
        {"ts": pd.date_range("2021-01-01", periods=n, freq="D"), "open": open_, "close": close}
    )


def test_orders_fill_at_the_next_open_with_slippage_and_fees():
    frame = pd.DataFrame({"open": [10.0, 20.0, 30.0, 40.0], "close": [11.0, 21.0, 31.0, 41.0]})
    result = simulate_orders(frame, [2, 0, -3, 5], init_cash=1000, fees=0.01, fixed_fees=0.5, slippage=0.1)
    fills = result.fills
    assert fills["bar"].tolist() == [1, 3]  # the last bar's order never fills
    assert fills["price"].tolist() == pytest.approx([22.0, 36.0])  # buy +10 %, sell −10 %
    assert fills["fees"].tolist() == pytest.approx([2 * 22 * 0.01 + 0.5, 3 * 36 * 0.01 + 0.5])
    assert result.position.tolist() == [0, 2, 2, -1]  # a sale beyond the holding goes short
    cash_1 = 1000 - 44 - 0.94
    cash_3 = cash_1 + 108 - 1.58
    assert result.cash.tolist() == pytest.approx([1000, cash_1, cash_1, cash_3])
    assert result.value.tolist() == pytest.approx([1000, cash_1 + 2 * 21, cash_1 + 2 * 31, cash_3 - 41])
    same_bar = simulate_orders(frame, [2, 0, 0, 0], init_cash=1000, fees=0.0, price="close")
    assert same_bar.fills["price"].tolist() == [11.0]


def test_bad_orders_are_errors_that_name_the_bar():
    frame = bars(5, 0)
    with pytest.raises(ValueError, match="bar 2"):
        simulate_orders(frame, [0, 1, np.inf, 0, 0], init_cash=1e4, fees=0.0)
    with pytest.raises(ValueError, match="one per bar"):
        simulate_orders(frame, [1, 2], init_cash=1e4, fees=0.0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("price", ["next_open", "close"])
def test_every_fill_and_the_final_value_match_vectorbt(seed, price):
    frame = bars(400, seed)
    rng = np.random.default_rng(100 + seed)
    orders = np.where(rng.random(400) < 0.3, rng.choice([-1, 1], 400) * rng.uniform(1, 20, 400), np.nan)
    fees, fixed_fees, slippage = rng.uniform(0, 0.005), rng.uniform(0, 2), rng.uniform(0, 0.01)
    ours = simulate_orders(
        frame, orders, init_cash=1e7, fees=fees, fixed_fees=fixed_fees, slippage=slippage, price=price
    )
    fill_at = frame["open"] if price == "next_open" else frame["close"]
    size = pd.Series(orders).shift(1) if price == "next_open" else pd.Series(orders)
    theirs = vbt.Portfolio.from_orders(
        frame["close"],
        size,
        price=fill_at,
        fees=fees,
        fixed_fees=fixed_fees,
        slippage=slippage,
        init_cash=1e7,
        direction="both",
        freq="1D",
    )
    records = theirs.orders.records
    assert len(records) == len(ours.fills) > 50
    assert (records["idx"] == ours.fills["bar"]).all()
    signed = np.where(records["side"] == 0, records["size"], -records["size"])
    np.testing.assert_allclose(ours.fills["size"], signed, rtol=1e-9)
    np.testing.assert_allclose(ours.fills["price"], records["price"], rtol=1e-9)
    np.testing.assert_allclose(ours.fills["fees"], records["fees"], rtol=1e-9)
    np.testing.assert_allclose(ours.value, theirs.value(), rtol=1e-9)
    assert ours.final_value == pytest.approx(theirs.final_value(), rel=1e-9)
    assert (ours.position < 0).any() and (ours.position > 0).any()


def test_target_exposures_are_sized_at_the_decision_close_and_filled_next_open():
    frame = pd.DataFrame({"open": [10.0, 11, 12, 13], "close": [10.5, 11.5, 12.5, 13.5]})
    result = simulate_exposures(frame, [1.0, 1.0, 0.0, 0.0], init_cash=1000, fees=0.001)
    assert result.fills["bar"].tolist() == [1, 3]
    shares = 1000 / 10.5
    assert result.fills["size"].tolist() == pytest.approx([shares, -shares])
    assert result.fills["price"].tolist() == [11.0, 13.0]
    assert result.position.tolist() == pytest.approx([0, shares, shares, 0])
    with pytest.raises(ValueError, match="bar 1"):
        simulate_exposures(frame, [1.0, np.nan, 0, 0], init_cash=1000, fees=0.0)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_decide_from_the_past_only(name):
    close = bars(600, 3)["close"]
    exposure = BASELINES[name](close, 252)
    cut = 400
    changed = close.copy()
    changed.iloc[cut + 1 :] *= np.exp(np.random.default_rng(0).normal(0, 0.1, len(close) - cut - 1))
    pd.testing.assert_series_equal(exposure.iloc[: cut + 1], BASELINES[name](changed, 252).iloc[: cut + 1])
    assert exposure.between(-1, 1).all() and exposure.iloc[cut:].abs().sum() > 0


def test_baseline_rules():
    close = pd.Series(np.concatenate([np.linspace(100, 50, 300), np.linspace(50, 150, 300)]))
    sma = sma_crossover(close)
    assert (sma.iloc[:199] == 0).all() and sma.iloc[-1] == 1 and sma.iloc[300] == 0
    momentum = time_series_momentum(close)
    assert momentum.iloc[260] == -1 and momentum.iloc[-1] == 1 and (momentum.iloc[:252] == 0).all()
    rng = np.random.default_rng(1)
    calm = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.002, 300))))
    wild = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.04, 300))))
    assert volatility_targeted(calm, 252).iloc[-1] == 1.0  # capped
    assert volatility_targeted(wild, 252).iloc[-1] == pytest.approx(
        0.15 / (np.log(wild).diff().iloc[-20:].std() * np.sqrt(252))
    )


def test_the_training_loss_and_the_backtester_agree_on_the_same_positions():
    """The differentiable PnL of the loss (hold the position decided at t from open[t+1] to
    open[t+2], pay commission + slippage on the change) and the backtester's equity on the same
    target positions. With fills at the previous close (no gaps) and a new target every bar, the
    two differ only by the drift of the held fraction inside a bar, a second-order term."""
    import torch

    from hrm_core.training.losses import net_returns

    rng = np.random.default_rng(7)
    n = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    frame = pd.DataFrame({"open": np.concatenate([[100.0], close[:-1]]), "close": close})
    target = np.round(rng.uniform(-1, 1, n), 3)
    commission, slippage = 0.0005, 0.0002
    result = simulate_exposures(frame, target, init_cash=1e5, fees=commission, slippage=slippage)
    open_ = frame["open"].to_numpy()
    next_return = torch.tensor(open_[2:] / open_[1:-1] - 1)  # decided at t: open[t+1] -> open[t+2]
    position = torch.tensor(target[:-2])[None]
    trading = TradingConfig(commission=commission, slippage=slippage)
    loss_pnl = net_returns(position, next_return[None], trading)[0].numpy()
    # equity at open[t+2] = equity at close[t+1]; at open[t+1] before the fill = equity at close[t]
    value = result.value.to_numpy()
    backtest_pnl = value[1:-1] / value[:-2] - 1
    assert np.abs(loss_pnl - backtest_pnl).max() < 2e-4  # |Δ| ≤ w·r² ≈ 1e-4 per bar
    np.testing.assert_allclose(np.corrcoef(loss_pnl, backtest_pnl)[0, 1], 1.0, atol=1e-3)
    assert np.prod(1 + loss_pnl) == pytest.approx(value[-2] / 1e5, rel=5e-3)


def test_the_loss_pays_what_the_decision_engine_charges_with_every_cost_on():
    """The policy's path (benchmark + tilt through the band, ``exposure.execute_path``) run by the
    engine every backtest uses (``run_decisions``) with commission, slippage, a $5 fixed fee and a
    1 bp a bar borrow on shorts: the loss's net returns track the engine's bar returns up to the
    drift of the held fraction (the engine holds shares through a HOLD, the loss a fraction), and
    the costs each charges agree."""
    import torch

    from hrm_core.engine.decisions import run_decisions
    from hrm_core.model.exposure import action_of, benchmark_exposure, execute_path
    from hrm_core.training.losses import net_returns

    rng = np.random.default_rng(11)
    n = 500
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])  # no gaps: a fill at the next open is the close
    bars = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "atr": 1.0,
        }
    )
    trading = TradingConfig(fixed_fee=5.0, borrow_rate=0.0001)
    policy = PolicyConfig(max_tilt=1.0)
    benchmark = torch.tensor(benchmark_exposure(close, np.zeros(n, int), policy, trading))[None]
    logits = torch.tensor(np.cumsum(rng.normal(0, 0.4, n)) * 0.5 - 1.0)[None]  # a wandering tilt, often short
    one = torch.ones(())
    _, _, position = execute_path(logits, benchmark, torch.ones_like(benchmark), 0 * one, one, policy, 0.05)
    position = position[0]
    held = torch.cat([torch.zeros(1, dtype=position.dtype), position[:-1]])
    decisions = pd.DataFrame(
        {
            "action": action_of(position, held).numpy(),
            "quantity": position.abs().numpy(),
            "stop_loss": 0.0,
            "take_profit": 0.0,
        }
    )
    assert (position < 0).sum() > 50 and (decisions["action"] != ACTIONS.index("HOLD")).sum() > 30
    result = run_decisions(bars, decisions, trading)
    equity = result.equity.to_numpy()
    next_return = torch.tensor(open_[2:] / open_[1:-1] - 1)
    loss_pnl = net_returns(position[None, :-2], next_return[None], trading)[0].numpy()
    engine_pnl = equity[1:-1] / equity[:-2] - 1  # equity at close[t+1] (= open[t+2]) over close[t]
    assert np.abs(loss_pnl - engine_pnl).max() < 1e-3
    np.testing.assert_allclose(np.corrcoef(loss_pnl, engine_pnl)[0, 1], 1.0, atol=2e-3)
    assert np.prod(1 + loss_pnl) == pytest.approx(equity[-2] / trading.initial_capital, rel=1e-2)
    free = TradingConfig(fixed_fee=0.0, borrow_rate=0.0)
    loss_costs = (net_returns(position[None, :-2], next_return[None], free) - net_returns(
        position[None, :-2], next_return[None], trading))[0].sum().item()  # fmt: skip
    engine_costs = run_decisions(bars, decisions, free).equity.to_numpy()[-2] - equity[-2]
    assert loss_costs == pytest.approx(engine_costs / trading.initial_capital, rel=0.05)
