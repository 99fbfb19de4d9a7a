"""Backtests: every strategy on the same test bars, ledgers that add up to the equity, costs, the
report, clear errors, and a trained smoke-preset model on the sample data."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from hrm_core.core.config import load_config
from hrm_core.core.errors import DataError
from hrm_core.core.vocabulary import PARTS
from hrm_core.dataset.market import concat
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.sim.backtest import backtest_models, baseline_config
from hrm_core.sim.baselines import BASELINES
from hrm_core.sim.report import FIGURES, write_report
from hrm_core.sim.results import BENCHMARK, BUY_AND_HOLD_WITH_EXITS
from hrm_core.training.trainer import build_model
from hrm_core.workflows.backtest import backtest

CONFIG = load_config("configs/hrm_cpu_small.yaml")


@pytest.fixture(scope="module")
def data():
    markets = [planted_regime_market(1500, seed=seed) for seed in (1, 2)]
    return concat([dataclasses.replace(m, symbols=[name]) for m, name in zip(markets, "AB", strict=True)])


@pytest.fixture(scope="module")
def models(data):
    torch.manual_seed(0)
    hrm = build_model(CONFIG, data)
    hrm.set_cycles(1, 2)
    return {"hrm": hrm, "gru": build_model(baseline_config(CONFIG, "gru"), data)}


@pytest.fixture(scope="module")
def result(data, models):
    return backtest_models(models, data, CONFIG, act=True)


def test_every_strategy_runs_on_the_same_bars_of_every_symbol(result):
    assert set(result.runs) == {"hrm", "gru", BENCHMARK, *BASELINES}
    for runs in result.runs.values():
        assert len(runs) == 2
        for run, reference in zip(runs.values(), result.runs["hrm"].values(), strict=True):
            assert run.returns.index.equals(reference.returns.index)
    summary = result.summary()
    assert list(summary.index) == ["hrm", "gru", BENCHMARK, *BASELINES]
    assert {"sharpe", "psr", "dsr", "max_drawdown", "n_trades", "exposure", "turnover", "costs"} <= set(
        summary.columns
    )


def test_buy_and_hold_pays_one_entry_at_the_next_open(data, result):
    run = result.runs["buy_and_hold"]["A"]
    rows = np.flatnonzero(np.isin(data.ts, run.positions.index.values) & (data.symbol_id == 0))
    trading = CONFIG.trading
    entry = data.open[rows[1]] * (1 + trading.slippage)
    wanted = trading.initial_capital / data.close[rows[0]]  # sized on the decision's close
    affordable = (trading.initial_capital - trading.fixed_fee) / (1 + trading.commission) / entry
    assert trading.max_position_size == 1 and affordable < wanted  # this open gapped up: the buy is cut
    shares = min(wanted, affordable)
    cash = trading.initial_capital - shares * entry * (1 + trading.commission) - trading.fixed_fee
    final = cash + shares * data.close[rows[-1]]
    assert np.prod(1 + run.returns.to_numpy()) == pytest.approx(final / trading.initial_capital, rel=1e-9)
    assert run.costs == pytest.approx(
        shares * entry * trading.commission + shares * entry - shares * data.open[rows[1]]
    )
    (trade,) = run.trades.itertuples()
    assert (trade.exit, trade.entry_time, trade.bars) == ("end", run.positions.index[1], len(rows) - 1)


def test_every_ledger_adds_up_to_the_equity_it_made(result):
    """Each trade's pnl includes its fees and the last open trade is marked at the close, so the
    ledger sums to the final equity minus the starting capital, for every strategy (no borrow)."""
    capital = CONFIG.trading.initial_capital
    for strategy, runs in result.runs.items():
        for symbol, run in runs.items():
            final = capital * np.prod(1 + run.returns.to_numpy())
            assert run.trades["pnl"].sum() == pytest.approx(final - capital, rel=1e-9, abs=1e-6), (
                strategy,
                symbol,
            )
            assert (run.trades["exit_time"] >= run.trades["entry_time"]).all()


def test_the_models_report_segments_and_regimes_and_baseline_models_decide_in_one_pass(result):
    for run in result.runs["hrm"].values():
        assert ((run.segments >= 1) & (run.segments <= CONFIG.model.halt_max_steps)).all()
        assert np.allclose(run.regimes.sum(axis=1), 1.0)
        assert set(run.trades["exit"]) <= {"signal", "stop", "target", "end"}
    for run in result.runs["gru"].values():
        assert (run.segments == 1).all()


def test_exit_rules_are_off_by_default_and_buy_and_hold_is_reported_under_them_when_on(data, models, result):
    for runs in result.runs.values():
        for run in runs.values():
            assert set(run.trades["exit"]) <= {"signal", "end"}  # no stop or target executed
    with_exits = CONFIG.model_copy(
        update={"trading": CONFIG.trading.model_copy(update={"exit_rules": "atr", "risk_multiplier": 0.5})}
    )
    stopped = backtest_models({"hrm": models["hrm"]}, data, with_exits)
    exits = pd.concat([run.trades for run in stopped.runs[BUY_AND_HOLD_WITH_EXITS].values()])["exit"]
    assert (exits == "stop").sum() > 5 and (exits == "target").sum() > 5
    assert not stopped.summary().loc[BUY_AND_HOLD_WITH_EXITS].isna()["sharpe"]


def test_the_report_has_its_figures_html_and_summary(result, tmp_path):
    paths = write_report(result, tmp_path)
    for name in FIGURES:
        assert paths[name].read_bytes()[:4] == b"\x89PNG"
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert all(f"<th>{strategy}</th>" in page for strategy in result.runs)
    summary = json.loads(paths["summary"].read_text())
    assert set(summary["portfolio"]) == set(result.runs)
    buy_and_hold = result.summary().loc["buy_and_hold", "sharpe"]
    assert summary["portfolio"]["buy_and_hold"]["sharpe"] == pytest.approx(buy_and_hold)
    assert set(summary["per_symbol"]["hrm"]) == {"A", "B"}


def test_a_model_trained_on_other_features_is_refused(data, models):
    other = dataclasses.replace(data, tactical_names=("rsi_14", "macd", "bb_squeeze", "volume_ratio"))
    other_model = build_model(CONFIG, other)
    with pytest.raises(DataError, match="volume_ratio"):
        backtest_models({"hrm": other_model}, data, CONFIG)
    narrow = dataclasses.replace(
        data, strategic=data.strategic[:, :2], strategic_names=data.strategic_names[:2]
    )
    with pytest.raises(DataError, match="strategic"):
        backtest_models({"hrm": models["hrm"]}, narrow, CONFIG)


def test_an_empty_test_part_is_a_clear_error(data, models):
    no_test = data.with_part(np.where(data.part == PARTS.index("test"), -1, data.part))
    with pytest.raises(DataError, match="fold 0: the 'test' part has no symbol"):
        backtest_models(models, no_test, CONFIG)


def test_a_trained_smoke_preset_model_backtests_the_sample_data_into_a_report(tmp_path):
    """``backtest(config)`` end to end: the sample data, the smoke preset's model (the CPU preset
    shrunk; training at the CPU preset's size is ``make run``'s and the benchmarks' job) trained
    through its three stages, the flat and GRU baselines trained on the same loss, and the report."""
    result = backtest(load_config("configs/hrm_smoke.yaml"), report_dir=tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["portfolio"]) == {"hrm", "flat", "gru", BENCHMARK, *BASELINES}
    assert summary["symbols"] == ["NASDAQ", "SP500"]
    hrm = result.runs["hrm"]["SP500"]
    assert hrm.returns.index[0] > pd.Timestamp("2010-01-01")  # the test part: the last 40 % of time
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_a_model_that_holds_the_benchmark_has_no_active_sharpe_and_a_tilted_one_has(data, models, result):
    """Untrained, the tilt head is zero: the model's positions are the benchmark's up to float32
    rounding, which is no bet (active Sharpe 0, not a ratio of rounding errors); a tilt is one."""
    held = result.active_stats("hrm")
    assert held["tracking_error"] < 1e-6 and held["active_sharpe"] == 0.0
    torch.manual_seed(1)
    tilted = build_model(CONFIG, data)
    tilted.set_cycles(1, 2)
    with torch.no_grad():
        tilted.heads.tilt.weight.normal_(0.0, 0.5)
    active = backtest_models({"hrm": tilted}, data, CONFIG, rules=False).active_stats("hrm")
    assert active["tracking_error"] > 1e-3 and active["active_sharpe"] != 0.0
