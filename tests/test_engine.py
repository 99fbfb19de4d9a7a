"""One PnL engine: ``run_decisions`` (numba) against vectorbt fill by fill, its torch twin against it
to 1e-9 with every cost on, and the training loss and rollouts earning exactly what it earns."""

import numpy as np
import pandas as pd
import pytest
import torch
import vectorbt as vbt

from hrm_core import run_decisions
from hrm_core.core.config import PolicyConfig, TradingConfig, load_config
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.dataset.windows import WindowSampler
from hrm_core.engine.twin import differentiable_returns, run_positions
from hrm_core.model.exposure import action_of, benchmark_exposure, execute_path
from hrm_core.training.losses import net_returns

EVERY_COST = TradingConfig(commission=0.0007, slippage=0.0004, fixed_fee=5.0, borrow_rate=0.0001)


def gapped_bars(n: int, seed: int) -> pd.DataFrame:
    """A random walk whose opens gap away from the previous close."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.004, n))
    return pd.DataFrame(
        {
            "ts": pd.date_range("2021-01-01", periods=n, freq="D"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "atr": 1.0,
        }
    )


def wandering_positions(n: int, seed: int, close: np.ndarray) -> torch.Tensor:
    """[n] a policy's executed exposures: the benchmark plus a wandering, often short, tilt through
    a 0.05 band (holds, resizes, flips and closes)."""
    rng = np.random.default_rng(seed)
    policy = PolicyConfig(max_tilt=1.0)
    benchmark = torch.tensor(benchmark_exposure(close, np.zeros(n, int), policy, EVERY_COST))[None]
    logits = torch.tensor(np.cumsum(rng.normal(0, 0.4, n)) * 0.5 - 1.0)[None]
    one = torch.ones((), dtype=torch.float64)
    return execute_path(logits, benchmark, torch.ones_like(benchmark), 0 * one, one, policy, 0.05)[2][0]


def engine_decisions(position: torch.Tensor) -> pd.DataFrame:
    """The engine's actions that move the held exposure to ``position`` each bar."""
    held = torch.cat([torch.zeros(1, dtype=position.dtype), position[:-1]])
    return pd.DataFrame(
        {
            "action": action_of(position, held).numpy(),
            "quantity": position.abs().numpy(),
            "stop_loss": 0.0,
            "take_profit": 0.0,
        }
    )


def vectorbt_replay(bars: pd.DataFrame, ours, trading: TradingConfig) -> tuple[np.ndarray, vbt.Portfolio]:
    """The engine's fills (its position changes at each open) and vectorbt's ``from_orders``
    replaying them at the same prices, fees, fixed fees and slippage."""
    size = ours.position.diff().fillna(ours.position.iloc[0]).to_numpy()
    theirs = vbt.Portfolio.from_orders(
        bars["close"],
        np.where(size != 0, size, np.nan),
        price=bars["open"],
        fees=trading.commission,
        fixed_fees=trading.fixed_fee,
        slippage=trading.slippage,
        init_cash=trading.initial_capital,
        direction="both",
        freq="1D",
    )
    return size, theirs


@pytest.mark.parametrize("seed", range(4))
def test_the_torch_twin_equals_the_engine_with_every_cost_on(seed):
    bars = gapped_bars(600, seed)
    close = bars["close"].to_numpy()
    position = wandering_positions(len(bars), seed, close)
    decisions = engine_decisions(position)
    assert (position < 0).sum() > 50 and (decisions["action"] != ACTIONS.index("HOLD")).sum() > 30
    assert (decisions["action"] == ACTIONS.index("HOLD")).sum() > 30
    engine = run_decisions(bars, decisions, EVERY_COST)
    twin = run_positions(
        position[None, :-1],
        torch.tensor(bars["open"].to_numpy())[None],
        torch.tensor(close)[None],
        EVERY_COST,
    )
    equity = engine.equity.to_numpy()
    np.testing.assert_allclose(twin.equity[0].numpy(), equity, rtol=1e-9, atol=0)
    np.testing.assert_allclose(twin.returns[0].numpy(), engine.returns.to_numpy()[1:], rtol=0, atol=1e-9)
    paid = (twin.costs[0] * twin.equity[0, :-1]).sum().item()
    assert paid == pytest.approx(engine.costs, rel=1e-9)
    free = run_decisions(bars, decisions, TradingConfig(commission=0, slippage=0, fixed_fee=0, borrow_rate=0))
    assert free.equity.iloc[-1] - engine.equity.iloc[-1] > 0.9 * engine.costs  # every cost was charged


def test_the_loss_returns_have_the_engines_values_and_the_per_decision_gradient():
    bars = gapped_bars(50, 0)
    open_, close = (torch.tensor(bars[k].to_numpy())[None] for k in ("open", "close"))
    next_return = open_[:, 2:] / open_[:, 1:-1] - 1  # [1, 48]: decided at t, open[t+1] -> open[t+2]
    position = torch.tensor(np.repeat([0.5, -0.3, 0.8], 16), requires_grad=True)
    returns = differentiable_returns(position[None], open_[:, :49], close[:, :49], next_return, EVERY_COST)
    assert torch.equal(
        returns.detach(), run_positions(position[None], open_[:, :49], close[:, :49], EVERY_COST).returns
    )
    returns.sum().backward()
    # d/dw_t of Σ (w_t·R_t − costs): R_t, less the cost of the changes into and out of w_t
    assert torch.isfinite(position.grad).all()
    held = np.flatnonzero(np.diff(position.detach().numpy()) == 0) + 1
    np.testing.assert_allclose(
        position.grad[held[1:-1]].numpy(), next_return[0, held[1:-1]].numpy(), atol=0.02
    )
    assert (position.grad[held] != 0).all()  # a position the band holds still learns where to be


def test_the_loss_earns_what_the_engine_earns_on_the_same_chunks():
    config = load_config("configs/hrm_cpu_small.yaml")
    config = config.model_copy(update={"trading": EVERY_COST})
    market = planted_regime_market(3000, seed=3)
    sampler = WindowSampler(market, config, torch.device("cpu"))
    chunks = sampler.chunks(sampler.chunk_starts("train")[[0, 400, 900]])
    rng = np.random.default_rng(0)
    position = torch.tensor(np.round(rng.uniform(-1, 1, chunks.shape) * 4) / 4)  # repeats: holds
    loss_returns = net_returns(position, chunks, config.trading)
    for b in range(chunks.shape[0]):
        bars_rows = np.append(chunks.rows[b].numpy(), chunks.rows[b, -1].item() + 1)
        bars = pd.DataFrame(
            {k: getattr(market, k)[bars_rows] for k in ("open", "high", "low", "close")}
        ).assign(atr=1.0)
        engine = run_decisions(
            bars, engine_decisions(torch.cat([position[b], position[b, -1:]])), config.trading
        )
        np.testing.assert_allclose(loss_returns[b].numpy(), engine.returns.to_numpy()[1:], atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_every_fill_and_the_value_match_vectorbt(seed):
    """The engine's fills (its position changes at each open) replayed by vectorbt's
    ``Portfolio.from_orders`` at the same prices, fees, fixed fees and slippage give the same
    cash and value on every bar (borrow off: vectorbt charges none)."""
    bars = gapped_bars(500, 50 + seed)
    rng = np.random.default_rng(seed)
    trading = TradingConfig(
        commission=rng.uniform(0, 0.005),
        fixed_fee=rng.uniform(0, 2),
        slippage=rng.uniform(0, 0.01),
        borrow_rate=0.0,
        initial_capital=1e6,
    )
    decisions = pd.DataFrame(
        {
            "action": rng.choice(len(ACTIONS), len(bars), p=[0.15, 0.15, 0.1, 0.1, 0.5]),
            "quantity": rng.uniform(0.1, 1.0, len(bars)),
            "stop_loss": 0.0,
            "take_profit": 0.0,
        }
    )
    ours = run_decisions(bars, decisions, trading)
    size, theirs = vectorbt_replay(bars, ours, trading)
    records = theirs.orders.records
    assert len(records) == int((size != 0).sum()) > 50
    np.testing.assert_allclose(ours.cash.to_numpy(), theirs.cash().to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.equity.to_numpy(), theirs.value().to_numpy(), rtol=1e-9)
    assert (ours.position < 0).any() and (ours.position > 0).any()
    assert ours.costs == pytest.approx(
        records["fees"].sum()
        + np.abs(size * (np.where(size > 0, 1, -1) * trading.slippage) * bars["open"]).sum(),
        rel=1e-9,
    )


def test_a_flip_and_a_stop_in_one_bar_close_two_trades_and_the_ledger_adds_up():
    """Long, then SELL_SHORT: the flip at bar 2's open closes the long, and bar 2's high touches the
    new short's stop, which closes the short in the same bar. Both trades are in the ledger, and
    their PnL is the account's change."""
    bars = pd.DataFrame(
        {
            "open": [100.0, 100.0, 101.0, 101.0],
            "high": [100.5, 101.0, 120.0, 101.5],
            "low": [99.5, 99.0, 100.5, 100.5],
            "close": [100.0, 101.0, 110.0, 101.0],
            "atr": [2.0, 2.0, 2.0, 2.0],
        }
    )
    decisions = pd.DataFrame(
        {
            "action": ["BUY_LONG", "SELL_SHORT", "HOLD", "HOLD"],
            "quantity": [0.5, 0.5, 0.0, 0.0],
            "stop_loss": [0.0, 2.0, 0.0, 0.0],
            "take_profit": 0.0,
        }
    )
    trading = TradingConfig(commission=0.001, slippage=0.0005, fixed_fee=1.0, borrow_rate=0.0)
    result = run_decisions(bars, decisions, trading)
    assert list(result.trades["exit"]) == ["signal", "stop"]
    assert list(result.trades["exit_bar"]) == [2, 2] and result.trades["shares"].iloc[1] < 0
    assert result.position.iloc[-1] == 0.0
    total = result.trades["pnl"].sum()
    assert total == pytest.approx(result.equity.iloc[-1] - trading.initial_capital, abs=1e-9)


def gap_up_bars(n: int, seed: int) -> pd.DataFrame:
    """A random walk that often opens well above the previous close: a long sized on the close
    costs more than the account holds at the open."""
    bars = gapped_bars(n, seed)
    rng = np.random.default_rng(seed)
    jump = np.where(rng.uniform(size=n) < 0.3, rng.uniform(0.01, 0.05, n), 0.0)
    bars["open"] = np.concatenate([[100.0], bars["close"].to_numpy()[:-1]]) * (1 + jump)
    bars["high"] = np.maximum(bars["open"], bars["close"]) * 1.002
    bars["low"] = np.minimum(bars["open"], bars["close"]) * 0.998
    return bars


@pytest.mark.parametrize("seed", range(5))
def test_at_a_cap_of_one_cash_never_goes_below_zero_on_gapped_bars(seed):
    """Longs at the full cap, sized on the close and filled at a higher open with every cost on,
    are cut to what cash buys, as vectorbt fills them: cash stays ≥ 0 in the engine and its torch
    twin, and vectorbt replaying the engine's fills agrees on every bar."""
    bars = gap_up_bars(800, seed)
    rng = np.random.default_rng(100 + seed)
    trading = EVERY_COST.model_copy(update={"max_position_size": 1.0, "borrow_rate": 0.0})
    position = torch.tensor(rng.choice([0.0, 1.0, -0.5, 1.0], len(bars)), dtype=torch.float64)
    decisions = engine_decisions(position)
    ours = run_decisions(bars, decisions, trading)
    assert ours.cash.min() >= 0
    cut = (ours.cash == 0).sum()
    assert cut > 20  # the cut happened, and often
    uncapped = run_decisions(bars, decisions, trading.model_copy(update={"max_position_size": 1.0001}))
    assert uncapped.cash.min() < 0  # without the cut the same stream borrows cash
    twin = run_positions(
        position[None, :-1],
        torch.tensor(bars["open"].to_numpy())[None],
        torch.tensor(bars["close"].to_numpy())[None],
        trading,
    )
    np.testing.assert_allclose(twin.equity[0].numpy(), ours.equity.to_numpy(), rtol=1e-9, atol=0)
    _, theirs = vectorbt_replay(bars, ours, trading)
    np.testing.assert_allclose(ours.cash.to_numpy(), theirs.cash().to_numpy(), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(ours.equity.to_numpy(), theirs.value().to_numpy(), rtol=1e-9)


def test_action_names_and_codes_execute_the_same_and_unknown_names_are_refused():
    bars = gapped_bars(300, 7)
    rng = np.random.default_rng(7)
    codes = rng.choice(len(ACTIONS), len(bars))
    decisions = pd.DataFrame(
        {"action": codes, "quantity": rng.uniform(0, 1, len(bars)), "stop_loss": 1.0, "take_profit": 2.0}
    )
    by_code = run_decisions(bars, decisions, EVERY_COST)
    for actions in (
        np.asarray(ACTIONS, dtype=object)[codes],
        pd.Categorical(np.asarray(ACTIONS)[codes]),
        codes.astype(float),
        codes.astype(object),
    ):
        same = run_decisions(bars, decisions.assign(action=actions), EVERY_COST)
        pd.testing.assert_series_equal(same.equity, by_code.equity)
        pd.testing.assert_frame_equal(same.trades, by_code.trades)
    assert set(by_code.trades["exit"]) <= {"signal", "stop", "target", "end"} and len(by_code.trades) > 10
    for bad in ("BUY", 5, -1, 1.5, None):
        wrong = decisions.assign(action=decisions["action"].astype(object))
        wrong.loc[42, "action"] = bad
        with pytest.raises(ValueError, match="bar 42: action must be one of BUY_LONG"):
            run_decisions(bars, wrong, EVERY_COST)
