"""Trainer and objective: seeded runs are bit-identical, a killed run resumes exactly, checkpoints
load safely, the curriculum runs through ACT, the loss's backtest follows the execution semantics
and has the optimum it documents, every served head is trained, and chunks are not chosen by their
future. Whether the CPU preset, at its own budget, learns a planted regime-dependent edge that an H
without strategic features cannot, and a drift market's optimal exposure, takes minutes of
training: ``benchmarks/bench_learning.py`` checks it."""

import dataclasses

import duckdb
import numpy as np
import pytest
import torch

from hrm_core import train
from hrm_core.core.checkpoint import load_checkpoint, save_checkpoint
from hrm_core.core.config import load_config
from hrm_core.core.errors import HRMError
from hrm_core.core.feature_registry import model_features
from hrm_core.core.vocabulary import PARTS, TASKS
from hrm_core.dataset.scenarios import multi_timescale_market, planted_regime_market
from hrm_core.dataset.windows import WindowSampler
from hrm_core.model.act import run_segments
from hrm_core.training.losses import act_loss, constant_tilt_loss
from hrm_core.training.trainer import Trainer, build_model

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


def test_without_validation_data_every_stage_runs_its_whole_budget(market):
    no_validation = market.with_part(np.where(market.part == PARTS.index("validation"), -1, market.part))
    history = Trainer(tiny_config(patience=1), no_validation, progress=False).fit().history
    assert len(history) == 20  # 40 episodes / 4 chunks, two stages: early stopping is off
    assert not any("val_loss" in h for h in history)


def test_a_window_that_would_leave_its_symbol_is_refused():
    from hrm_core.dataset.market import concat

    two = concat(
        [
            dataclasses.replace(planted_regime_market(300, seed=s), symbols=[n])
            for s, n in ((1, "A"), (2, "B"))
        ]
    )
    strategic, tactical = two.windows(np.array([299, 599]), 50, 10)
    assert strategic.shape == (2, 50, 4) and tactical.shape == (2, 10, 4)
    with pytest.raises(HRMError, match=r"B bar .* 50-bar window would reach before the symbol's first bar"):
        two.windows(np.array([320]), 50, 10)


def test_a_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
    with pytest.raises(HRMError, match="weights_only"):
        load_checkpoint(path)
    save_checkpoint(tmp_path / "ok.pt", {"weights": torch.ones(2), "step": 3, "config": {"a": [1, "b"]}})
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3


def train_chunks(market, config):
    sampler = WindowSampler(market, config, torch.device("cpu"))
    starts = sampler.chunk_starts("train")
    return sampler.chunks(starts[:: config.training.chunk_bars // 2])


def best_constant_tilt(chunks, config) -> float:
    grid = np.round(np.linspace(-1, 1, 21), 2)
    return float(grid[np.argmin([constant_tilt_loss(k, chunks, config) for k in grid])])


def test_the_losss_optimum_is_the_benchmark_on_noise_and_a_full_tilt_under_a_strong_drift():
    """The analytic optimum (losses.py): a constant tilt k* = w_A·μ / (γσ²), bounded; the benchmark (a
    zero tilt, which scores exactly 0) when μ = 0. μ/σ² = 10 here against γ/w_A = 2: up, the target
    exposure goes to the cap (the benchmark holds ~0.93, so any tilt from ~0.1 reaches it); down, a
    full short tilt."""
    config = load_config(PRESET)
    up = train_chunks(planted_regime_market(6000, seed=1, rho=0.0, drift=0.001), config)
    down = train_chunks(planted_regime_market(6000, seed=1, rho=0.0, drift=-0.001), config)
    noise = train_chunks(planted_regime_market(6000, seed=1, rho=0.0), config)
    for chunks in (up, down, noise):
        assert constant_tilt_loss(0.0, chunks, config) == 0.0
    assert best_constant_tilt(up, config) >= 0.3
    assert constant_tilt_loss(0.5, up, config) < constant_tilt_loss(0.0, up, config) - 0.01
    assert best_constant_tilt(down, config) == -1.0
    assert abs(best_constant_tilt(noise, config)) <= 0.2


def test_on_the_sample_data_no_constant_tilt_beats_the_benchmark_by_more_than_noise():
    """Before training anything: on the sample's training part (1999 on: two bear markets), the
    best constant tilt scores within 0.1 % a year of the benchmark, so any gain must come from a
    tilt that varies with the market."""
    from hrm_core.workflows.train import prepare_market_data

    config = load_config(PRESET)
    chunks = train_chunks(prepare_market_data(config), config)
    assert constant_tilt_loss(0.0, chunks, config) == 0.0
    best = best_constant_tilt(chunks, config)
    assert abs(best) <= 0.2
    assert constant_tilt_loss(best, chunks, config) >= -0.001 * config.training.loss_weights.active


def test_every_served_head_gets_gradient_from_the_training_loss(market):
    config = tiny_config()
    model = build_model(config, market)
    sampler = WindowSampler(market, config, torch.device("cpu"))
    chunks = sampler.sample(sampler.chunk_starts("train"), 4, np.random.default_rng(0))
    run = run_segments(model, chunks.inputs, 3, act=True, exploration_prob=1.0)
    loss, logged = act_loss(run, chunks, config, act=True, heads=model.heads)
    loss.backward()
    for name in ("tilt", "outcome", "regime", "q"):
        grad = getattr(model.heads, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.heads.hold.grad is not None and model.heads.hold.grad.abs() > 0
    assert {"active", "variance", "turnover", "tilt", "outcome", "q", "exposure"} <= logged.keys()


def test_no_real_chunk_is_chosen_by_what_happens_after_its_first_bar(market):
    """Rewriting every task tag and every price after the chosen starts changes nothing chosen."""
    config = tiny_config()
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    sampler = WindowSampler(market, config, torch.device("cpu"))
    starts = sampler.chunk_starts("train")
    chosen = sampler.sample(starts, 64, rng_a).rows[:, 0]
    shuffled = dataclasses.replace(
        market,
        task=np.random.default_rng(1).integers(-1, len(TASKS), len(market)),
        open=market.open * np.exp(np.random.default_rng(2).normal(0, 0.05, len(market))),
    )
    other = WindowSampler(shuffled, config, torch.device("cpu"))
    assert np.array_equal(other.chunk_starts("train"), starts)
    assert torch.equal(other.sample(other.chunk_starts("train"), 64, rng_b).rows[:, 0], chosen)


def test_train_api_trains_the_configured_model_on_the_sample_data():
    """``train(config)`` as the seed calls it: the sample's configured features in, every curriculum
    step run with a gradient, validation evaluated, and the tilt's gate decided on the validation
    bars (these two warm-up steps are no candidates, so the start weights are kept, gated)."""
    config = tiny_config(curriculum=[{"name": "basic", "H_cycles": 1, "L_cycles": 1, "episodes": 8}])
    result = train(config, progress=False)
    hf = config.hierarchical_features
    strategic, tactical = result.model.feature_names
    expected = model_features(hf.strategic_indicators, hf.tactical_indicators)
    assert (list(strategic), list(tactical)) == (expected["strategic"], expected["tactical"])
    steps = config.training.curriculum[0].episodes // config.training.batch_chunks
    assert [h["step"] for h in result.history] == list(range(1, steps + 1))
    assert all(np.isfinite(h["loss"]) for h in result.history if "loss" in h)
    assert any("val_active_sharpe" in h for h in result.history)
    assert all(h["grad_norm"] > 0 for h in result.history)  # every step updated the model
    assert result.gate is not None and result.gate.trials >= 1 and result.gate.bars > 100
    assert not result.gate.deployed and "trades the benchmark" in result.gate.reason


def test_scenario_generators_fill_scarce_tasks_with_their_own_situations():
    from hrm_core.dataset.market import load_market_data
    from hrm_core.dataset.scenarios import scarce_tasks
    from hrm_core.workflows.train import prepare_warehouse, with_scenarios

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
    from hrm_core.dataset.market import load_market_data
    from hrm_core.workflows.train import prepare_warehouse

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


def test_the_multi_timescale_markets_regime_is_readable_over_the_strategic_window_only():
    """The case the H/L split exists for: the signal's sign is set by a regime that one bar's
    strategic reading barely tells, while the mean over the H window (100 bars) tells it well."""
    market = multi_timescale_market(10_000, seed=0)
    reading, signal = market.strategic[:, 0].astype(float), market.tactical[:, 0].astype(float)
    next_return = np.log(market.open[1:] / market.open[:-1])  # open[t] -> open[t+1], decided at t's close
    window = load_config(PRESET).hierarchical_features.high_level_lookback
    long_mean = np.convolve(reading, np.ones(window) / window)[: len(reading)]  # trailing mean
    rows = np.arange(window, len(reading) - 2)

    def edge(regime_guess: np.ndarray) -> float:
        """Correlation of the guessed regime × signal at bar t with the return from t + 1's open."""
        return float(np.corrcoef(np.sign(regime_guess[rows]) * signal[rows], next_return[rows + 1])[0, 1])

    one_bar, over_window = edge(reading), edge(long_mean)
    assert over_window >= 0.25
    assert one_bar <= 0.15 and over_window >= 2 * one_bar
