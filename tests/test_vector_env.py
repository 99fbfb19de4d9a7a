"""VectorTradingEnv equals TradingEnv on the same actions, episode by episode."""

import numpy as np
import pytest
import torch

from hrm_core.core.config import load_config
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.engine.env import TradingEnv
from hrm_core.engine.vector_env import VectorTradingEnv

CONFIG = load_config("configs/hrm_cpu_small.yaml", trading={"borrow_rate": 0.0001})


def test_the_vector_env_equals_the_scalar_env_on_the_same_actions():
    market = planted_regime_market(3000, seed=5)
    scalar = TradingEnv(market, CONFIG, part="test")
    n, steps = 8, 200
    vector = VectorTradingEnv(market, CONFIG, n_envs=n, part="test", episode_bars=10_000)
    vector.reset(start_rows=np.full(n, scalar.rows[0]))
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 5, (steps, n))
    quantity = rng.uniform(0, 1, (steps, n)).astype(np.float32)
    stops = rng.uniform(0.5, 3, (steps, n)).astype(np.float32)
    targets = rng.uniform(0.5, 3, (steps, n)).astype(np.float32)
    vector_rewards = np.array(
        [vector.step(actions[k], quantity[k], stops[k], targets[k])[1] for k in range(steps)]
    )
    final_equity = vector.observation()["equity"]
    for env in (0, n - 1):
        scalar.reset(seed=0)
        rewards = []
        for k in range(steps):
            action = {
                "action_type": int(actions[k, env]),
                "quantity": quantity[k, env : env + 1],
                "stop_loss": stops[k, env : env + 1],
                "take_profit": targets[k, env : env + 1],
            }
            observation, reward, *_ = scalar.step(action)
            rewards.append(reward)
        np.testing.assert_allclose(vector_rewards[:, env], rewards, rtol=1e-12, atol=1e-15)
        assert final_equity[env] == pytest.approx(scalar.equity, rel=1e-12)
        np.testing.assert_allclose(vector.observation()["account"][env], observation["account"], rtol=1e-6)


def test_episodes_restart_at_their_end_and_windows_end_at_the_row():
    market = planted_regime_market(3000, seed=5)
    vector = VectorTradingEnv(market, CONFIG, n_envs=4, part="train", episode_bars=5, seed=1)
    obs = vector.reset()
    hold = np.full(4, 4)
    ones = np.ones(4)
    for _ in range(4):
        obs, _, done = vector.step(hold, ones, ones, ones)
        assert not done.any()
    _, _, done = vector.step(hold, ones, ones, ones)
    assert done.all()
    strategic, tactical = vector.windows(obs["rows"])
    high = CONFIG.hierarchical_features.high_level_lookback
    np.testing.assert_array_equal(
        strategic[0], market.strategic[obs["rows"][0] - high + 1 : obs["rows"][0] + 1]
    )
    assert tactical.shape == (4, CONFIG.hierarchical_features.low_level_lookback, market.tactical.shape[1])


def test_torch_actions_give_the_same_steps_as_torch_tensors_and_bad_actions_are_refused():
    market = planted_regime_market(3000, seed=5)
    envs = [VectorTradingEnv(market, CONFIG, n_envs=6, part="test", seed=2) for _ in range(2)]
    for env in envs:
        env.reset()
    rng = np.random.default_rng(3)
    for _ in range(50):
        actions = rng.integers(0, 5, 6), rng.uniform(0, 1, 6), rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
        obs, rewards, done = envs[0].step(*actions)
        torch_obs, torch_rewards, torch_done = envs[1].step(*(torch.as_tensor(a) for a in actions))
        assert isinstance(torch_rewards, torch.Tensor) and torch_done.dtype == torch.bool
        np.testing.assert_array_equal(torch_rewards.numpy(), rewards)
        np.testing.assert_array_equal(torch_done.numpy(), done)
        np.testing.assert_array_equal(torch_obs["account"].numpy(), obs["account"])
    bad = np.array([0.5, 0.5, np.nan, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=f"episode 2 at row {envs[0].rows[2]}: quantity must be finite"):
        envs[0].step(np.zeros(6, int), bad, np.ones(6), np.ones(6))
