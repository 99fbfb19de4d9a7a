"""Trainer: seeded runs are bit-identical, a killed run resumes exactly, checkpoints load safely,
the curriculum runs through ACT, the loss's backtest follows the execution semantics, and the
model learns a planted regime-dependent edge that an H without strategic features cannot."""

import dataclasses

import duckdb
import numpy as np
import pytest
import torch

from hrm_core import train
from hrm_core.config import load_config
from hrm_core.errors import HRMError
from hrm_core.training.checkpoint import load_checkpoint, save_checkpoint
from hrm_core.training.evaluate import annualised_sharpe, rollout
from hrm_core.training.losses import net_returns, terms_for_segment
from hrm_core.training.scenarios import planted_regime_market
from hrm_core.training.trainer import Trainer

PRESET = "configs/hrm_cpu_small.yaml"


def tiny_config(**training):
    return load_config(
        PRESET,
        hierarchical_features={"high_level_lookback": 20, "low_level_lookback": 10},
        model={"hidden_size": 16, "num_heads": 2, "h_pool": 5, "halt_max_steps": 3},
        training={
            "chunk_bars": 32,
            "batch_chunks": 4,
            "eval_every": 5,
            "checkpoint_every": 5,
            "curriculum": [
                {"name": "basic", "H_cycles": 1, "L_cycles": 2, "episodes": 40},
                {"name": "full", "H_cycles": 2, "L_cycles": 2, "act": True, "episodes": 40},
            ],
            **training,
        },
    )


@pytest.fixture(scope="module")
def market():
    return planted_regime_market(2000, seed=3)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_seeded_runs_are_bit_identical_on_cpu(market):
    first = Trainer(tiny_config(), market, progress=False).fit()
    second = Trainer(tiny_config(), market, progress=False).fit()
    assert_same_weights(weights(first.model), weights(second.model))
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]
    assert {h["stage"] for h in first.history} == {"basic", "full"}
    act_steps = [h["segments"] for h in first.history if h["stage"] == "full"]
    assert all(1 <= s <= 3 for s in act_steps)
    assert all("q" in h for h in first.history if h["stage"] == "full")


def test_a_killed_run_resumes_where_it_stopped(market, tmp_path):
    whole = Trainer(tiny_config(), market, progress=False).fit()
    Trainer(tiny_config(), market, checkpoint_dir=tmp_path, progress=False).fit(stop_after_steps=13)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3  # 10 steps in stage 1, 3 in stage 2
    resumed = Trainer(tiny_config(), market, checkpoint_dir=tmp_path, progress=False).fit()
    assert_same_weights(weights(whole.model), weights(resumed.model))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]


def test_a_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
    with pytest.raises(HRMError, match="weights_only"):
        load_checkpoint(path)
    save_checkpoint(tmp_path / "ok.pt", {"weights": torch.ones(2), "step": 3, "config": {"a": [1, "b"]}})
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3


def test_the_loss_backtest_fills_next_open_and_charges_costs_on_position_changes():
    position = torch.tensor([[1.0, 1.0, -0.5, 0.0]])
    held = torch.tensor([[0.0, 1.0, 1.0, -0.5]])
    next_return = torch.tensor([[0.01, -0.02, 0.03, 0.05]])
    got = net_returns(position, held, next_return, cost_rate=0.001)
    expected = [0.01 - 0.001, -0.02, -0.015 - 0.0015, 0.0 - 0.0005]
    assert got[0].tolist() == pytest.approx(expected)
    assert terms_for_segment(0, 4) == ("immediate",)
    assert terms_for_segment(3, 4) == ("immediate", "short", "medium", "long")
    assert terms_for_segment(1, 2) == ("immediate", "short", "medium", "long")


def test_train_api_runs_on_the_sample_data():
    config = tiny_config(curriculum=[{"name": "basic", "H_cycles": 1, "L_cycles": 1, "episodes": 8}])
    result = train(config, progress=False)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["loss"])


def test_the_model_learns_a_planted_regime_signal_that_strategic_blindness_cannot():
    config = load_config(
        PRESET,
        model={"h_update_interval": 1},
        training={
            "chunk_bars": 64,
            "curriculum": [{"name": "basic", "H_cycles": 1, "L_cycles": 3, "episodes": 3200}],
        },
    )
    market = planted_regime_market(10_000, seed=0)
    periods = config.trading.periods_per_year

    model = Trainer(config, market, progress=False).fit().model
    learned = rollout(model, market, "test", config, act=False)
    blind_market = dataclasses.replace(market, strategic=np.zeros_like(market.strategic))
    blind_model = Trainer(config, blind_market, progress=False).fit().model
    blind = rollout(blind_model, blind_market, "test", config, act=False)

    assert abs(annualised_sharpe(learned.buy_and_hold, periods)) < 0.5
    assert learned.sharpe(periods) >= 1.0
    assert learned.sharpe(periods) - blind.sharpe(periods) >= 0.5


def test_scenario_generators_fill_scarce_tasks_with_their_own_situations():
    from hrm_core.training.api import prepare_warehouse, with_scenarios
    from hrm_core.training.data import PARTS, TASKS, load_market_data
    from hrm_core.training.scenarios import scarce_tasks

    config = load_config(PRESET, training={"min_task_chunks": 100_000, "synthetic_bars": 1500})
    con = duckdb.connect()
    prepare_warehouse(config, con)
    real = load_market_data(con, config, 0)
    assert scarce_tasks(real, config) == list(TASKS)
    data = with_scenarios(real, config)
    added = [s for s in data.symbols if s.startswith("SYN_")]
    assert added == sorted(f"SYN_{task}" for task in TASKS)
    for index, task in enumerate(TASKS):
        own = (data.task[data.symbol_id == data.symbols.index(f"SYN_{task}")] == index).mean()
        assert own >= 1.3 * (real.task == index).mean(), task
    synthetic_rows = np.isin(data.symbol_id, [data.symbols.index(s) for s in added])
    assert set(np.unique(data.part[synthetic_rows])) <= {-1, PARTS.index("train")}
    assert np.array_equal(data.part[~synthetic_rows], real.part)
    assert not scarce_tasks(real, load_config(PRESET))


def test_a_backtest_of_a_folds_model_may_trade_every_later_test_fold():
    from hrm_core.training.api import prepare_warehouse
    from hrm_core.training.data import PARTS, load_market_data

    config = load_config(PRESET)
    con = duckdb.connect()
    prepare_warehouse(config, con)
    own = load_market_data(con, config, 0)
    extended = load_market_data(con, config, 0, test_to_end=True)
    test = PARTS.index("test")
    assigned = own.part >= 0
    assert np.array_equal(own.part[assigned], extended.part[assigned])  # fold 0's own parts unchanged
    later = con.execute(
        "SELECT symbol, ts FROM splits.rows WHERE fold > 0 AND part = 'test' "
        "EXCEPT SELECT symbol, ts FROM splits.rows WHERE fold = 0"
    ).df()
    assert len(later) > 0
    newly_test = (extended.part == test) & (own.part != test)
    assert newly_test.sum() == len(later)  # the folds tile the tail: nothing else was added
    for symbol_id, symbol in enumerate(extended.symbols):
        rows = np.flatnonzero((extended.part == test) & (extended.symbol_id == symbol_id))
        assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1)), symbol  # one contiguous stretch
        assert rows[-1] == np.flatnonzero(extended.symbol_id == symbol_id)[-1]  # to the last bar
