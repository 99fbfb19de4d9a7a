"""backtest_model: the agent and the baselines on the same test bars, net of costs, per symbol and
as a portfolio."""

import dataclasses

import numpy as np
import pytest
import torch

from hrm_core.config import load_config
from hrm_core.sim.backtest import backtest_model
from hrm_core.sim.baselines import BASELINES
from hrm_core.training.data import concat
from hrm_core.training.scenarios import planted_regime_market
from hrm_core.training.trainer import build_model

CONFIG = load_config("configs/hrm_cpu_small.yaml")


@pytest.fixture(scope="module")
def result():
    markets = [planted_regime_market(1500, seed=seed) for seed in (1, 2)]
    data = concat([dataclasses.replace(m, symbols=[name]) for m, name in zip(markets, "AB", strict=True)])
    torch.manual_seed(0)
    model = build_model(CONFIG, data)
    model.set_cycles(1, 2)
    return data, backtest_model(model, data, CONFIG, act=True)


def test_every_strategy_runs_on_the_same_bars_of_every_symbol(result):
    _, backtest = result
    assert set(backtest.runs) == {"hrm", *BASELINES}
    for runs in backtest.runs.values():
        assert len(runs) == 2
        for run, reference in zip(runs.values(), backtest.runs["hrm"].values(), strict=True):
            assert run.returns.index.equals(reference.returns.index)
    summary = backtest.summary()
    assert list(summary.index) == ["hrm", *BASELINES]
    assert {"sharpe", "psr", "max_drawdown", "n_trades"} <= set(summary.columns)


def test_buy_and_hold_pays_one_entry_at_the_next_open(result):
    data, backtest = result
    run = next(iter(backtest.runs["buy_and_hold"].values()))
    rows = np.flatnonzero(np.isin(data.ts, run.positions.index.values) & (data.symbol_id == 0))
    trading = CONFIG.trading
    entry = data.open[rows[1]] * (1 + trading.slippage)
    shares = trading.initial_capital / data.close[rows[0]]
    cash = trading.initial_capital - shares * entry * (1 + trading.commission)
    final = cash + shares * data.close[rows[-1]]
    assert np.prod(1 + run.returns.to_numpy()) == pytest.approx(final / trading.initial_capital, rel=1e-9)


def test_the_agents_ledger_and_segments_add_up(result):
    _, backtest = result
    for run in backtest.runs["hrm"].values():
        assert ((run.segments >= 1) & (run.segments <= CONFIG.model.halt_max_steps)).all()
        assert np.allclose(run.regimes.sum(axis=1), 1.0)
        assert set(run.trades["exit"]) <= {"signal", "stop", "target"}
        assert (run.trades["exit_bar"] >= run.trades["entry_bar"]).all()
