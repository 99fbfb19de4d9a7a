"""TradingEnv: passes gymnasium's env checker and runs the same execution engine as run_decisions."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from hrm_core.core.config import PolicyConfig, load_config
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.dataset.windows import WindowSampler
from hrm_core.engine.decisions import run_decisions
from hrm_core.engine.env import TradingEnv
from hrm_core.engine.hrm_env import HRMTradingEnv
from hrm_core.model.act import run_segments
from hrm_core.model.exposure import action_of, execute_path
from hrm_core.training.trainer import build_model

CONFIG = load_config("configs/hrm_cpu_small.yaml", trading={"borrow_rate": 0.0001})


@pytest.fixture(scope="module")
def market():
    return planted_regime_market(3000, seed=5)


def test_the_env_passes_gymnasiums_checker(market):
    check_env(TradingEnv(market, CONFIG), skip_render_check=True)


@pytest.mark.parametrize("reward", ["pnl", "log", "risk_adjusted"])
def test_the_env_equals_the_batch_engine_on_the_same_decisions(market, reward):
    env = TradingEnv(market, CONFIG, reward=reward)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    steps = 300
    decisions = pd.DataFrame(
        {
            "action": rng.integers(0, len(ACTIONS), steps),
            "quantity": rng.uniform(0, 1, steps),
            "stop_loss": rng.uniform(0.5, 3, steps),
            "take_profit": rng.uniform(0.5, 3, steps),
        }
    )
    equities, rewards = [env.equity], []
    for _, row in decisions.iterrows():
        action = {
            "action_type": int(row.action),
            "quantity": np.array([row.quantity], np.float32),
            "stop_loss": np.array([row.stop_loss], np.float32),
            "take_profit": np.array([row.take_profit], np.float32),
        }
        _, r, terminated, _, _ = env.step(action)
        equities.append(env.equity)
        rewards.append(r)
        assert not terminated
    first = env.rows[0]
    bars = pd.DataFrame(
        {k: getattr(market, k)[first : first + steps + 1] for k in ("open", "high", "low", "close", "atr")}
    )
    as_floats = decisions.astype({"quantity": np.float32, "stop_loss": np.float32, "take_profit": np.float32})
    batch = run_decisions(bars, pd.concat([as_floats, as_floats.iloc[:1]], ignore_index=True), CONFIG.trading)
    np.testing.assert_allclose(equities, batch.equity.to_numpy(), rtol=1e-12)
    changes = np.array(equities[1:]) / np.array(equities[:-1]) - 1
    expected = {"pnl": changes, "log": np.log1p(changes), "risk_adjusted": changes - changes**2}[reward]
    np.testing.assert_allclose(rewards, expected, rtol=1e-9, atol=1e-15)
    assert len(batch.trades) > 10


def test_an_episode_ends_at_the_last_decision_and_short_parts_are_refused(market):
    env = TradingEnv(market, CONFIG)
    env.reset(seed=0)
    hold = {
        "action_type": 4,
        "quantity": np.zeros(1, np.float32),
        "stop_loss": np.ones(1, np.float32),
        "take_profit": np.ones(1, np.float32),
    }
    steps, terminated = 0, False
    while not terminated:
        _, _, terminated, _, _ = env.step(hold)
        steps += 1
    assert steps == len(env.rows) - 1
    unused = dataclasses.replace(market, part=np.full(len(market), -1))
    with pytest.raises(ValueError, match="0 decision rows"):
        TradingEnv(unused, CONFIG)


@pytest.mark.parametrize(
    "key, value, rule",
    [
        ("quantity", np.nan, "quantity must be finite"),
        ("quantity", -0.5, "quantity must be finite and ≥ 0"),
        ("stop_loss", np.inf, "stop_loss must be in"),
        ("take_profit", -1.0, "take_profit must be in"),
        ("stop_loss", 25.0, "stop_loss must be in"),
    ],
)
def test_a_bad_action_is_refused_naming_the_symbol_and_bar(market, key, value, rule):
    env = TradingEnv(market, CONFIG)
    env.reset(seed=0)
    action = {
        "action_type": 0,
        "quantity": np.array([0.5], np.float32),
        "stop_loss": np.array([1.0], np.float32),
        "take_profit": np.array([1.0], np.float32),
    }
    with pytest.raises(ValueError, match=f"{market.symbols[0]} bar .* \\(row {env.rows[0]}\\): {rule}"):
        env.step(action | {key: np.array([value], np.float32)})


def test_the_hrm_env_executes_exactly_the_positions_the_loss_trains_on(market):
    """The loss's position path (the batch model's tilts, each reading the position the previous
    one left, through the band: ``execute_path``) is what the HRM env asks the engine for, bar by
    bar, and the engine holds exactly that exposure of equity from the next open."""
    config = CONFIG.model_copy(update={"policy": PolicyConfig(benchmark="flat", max_tilt=1.0)})
    torch.manual_seed(0)
    model = build_model(config, market).eval()
    with torch.no_grad():
        model.heads.tilt.weight.normal_(0.0, 0.5)  # an untrained but trading policy
        model.heads.hold.fill_(1.0)
    check_env(HRMTradingEnv(market, config, model), skip_render_check=True)
    env = HRMTradingEnv(market, config, model)
    env.reset(seed=0)
    steps = 150
    actions, quantities, shares = [], [], []
    for _ in range(steps):
        t = env.bar
        equity_at_decision = env.equity
        decision = env.decide()
        env.agent.reset()  # decide() again inside step(): the same decision (H refreshes every bar)
        _, _, _, _, info = env.step()
        actions.append(int(decision.action_index[0]))
        quantities.append(float(decision.position[0]))
        shares.append((info["shares"], float(decision.position[0]) * equity_at_decision / market.close[t]))
    sampler = WindowSampler(market, config, torch.device("cpu"))
    rows = torch.as_tensor(env.rows[:steps])
    with torch.no_grad():
        run = run_segments(model, sampler.windows(rows), config.model.halt_max_steps, act=True)
        heads, path = model.heads, (sampler.benchmark[rows][None], sampler.cap[rows][None])
        _, _, loss_positions = execute_path(
            run.final.tilt_logit[None],
            *path,
            heads.hold,
            heads.tilt_gate,
            config.policy,
            config.trading.no_trade_band,
        )
        loss_positions = loss_positions[0]
    held = torch.cat([torch.zeros(1), loss_positions[:-1]])
    # the env's agent runs the compiled kernels: float32 in another summation order
    assert quantities == pytest.approx(loss_positions.tolist(), abs=1e-5)
    assert actions == action_of(loss_positions, held).tolist()
    assert len(set(actions)) >= 3  # it enters, holds and exits
    for action, (after_fill, asked) in zip(actions, shares, strict=True):
        if action != ACTIONS.index("HOLD"):  # a HOLD keeps the shares, whose exposure drifts
            assert after_fill == pytest.approx(asked, rel=1e-9, abs=1e-9)
