"""RL on the simulator: PPO, GRPO and HybridGRPO learn a planted edge out of sample, seeded runs are
identical and a stopped run resumes exactly, GRPO's advantages are relative within each group, the
rewards compute what they document, and the fine-tuned model serves the policy RL trained."""

import json

import numpy as np
import pytest
import torch

from hrm_core.core.config import load_config
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.model.build import build_model_for
from hrm_core.model.exposure import held_tilt, next_position, policy_target
from hrm_core.rl.env import ExposureEnv
from hrm_core.rl.finetune import RLTrainer
from hrm_core.rl.grpo import group_advantages, group_starts
from hrm_core.rl.policy import MLPPolicy, PolicyOutput, TraderPolicy
from hrm_core.rl.rewards import RewardShaper
from hrm_core.rl.rollout import collect, deterministic_returns
from hrm_core.training.evaluate import rollout

SMALL = {
    "hierarchical_features": {"high_level_lookback": 20, "low_level_lookback": 10},
    "model": {
        "hidden_size": 16,
        "num_heads": 2,
        "h_pool": 5,
        "halt_max_steps": 2,
        "H_cycles": 1,
        "L_cycles": 2,
    },
    "training": {"deep_supervision_segments": 1},
}


def small_config(**rl):
    return load_config(
        "configs/hrm_cpu_small.yaml",
        **SMALL,
        rl={"learning_rate": 1e-3, "n_envs": 16, "rollout_bars": 32, "group_size": 4, **rl},
    )


@pytest.fixture(scope="module")
def momentum():
    return planted_regime_market(3000, seed=1, regime=1.0)


def mlp_policy(config) -> MLPPolicy:
    torch.manual_seed(config.seed)
    return MLPPolicy(4, 4, config.rl.init_std)


def oos_sharpe(policy, data, config) -> float:
    """Annualised active Sharpe against the benchmark of the deterministic policy (its mean)
    through the test part in the engine, net of costs."""
    rows = data.decision_rows("test", config.hierarchical_features.high_level_lookback)
    env = ExposureEnv(data, config, 1, len(rows), seed=0, part="test")
    net = deterministic_returns(lambda i, h: policy(i, h).mean, env, rows[0], len(rows) - 1, active=True)
    return float(net.mean() / net.std() * np.sqrt(252)) if net.std() > 0 else 0.0


@pytest.mark.parametrize("algorithm, updates", [("ppo", 60), ("grpo", 60), ("hybrid_grpo", 60)])
def test_each_algorithm_learns_a_planted_edge_out_of_sample(momentum, algorithm, updates):
    config = small_config(algorithm=algorithm, updates=updates)
    policy = mlp_policy(config)
    before = oos_sharpe(policy, momentum, config)
    history = RLTrainer(policy, momentum, config, progress=False).fit().history
    after = oos_sharpe(policy, momentum, config)
    assert after > 1.0 and after > before + 1.0, (before, after)
    assert len(history) == updates and all(np.isfinite(h["kl"]) for h in history)
    if algorithm != "ppo":
        assert history[-1]["kl_reference"] > 0  # the KL term to the starting policy is live


def test_seeded_runs_are_identical_and_a_stopped_run_resumes_exactly(momentum, tmp_path):
    config = small_config(algorithm="ppo", updates=4, checkpoint_every=1)

    def hrm_policy():
        torch.manual_seed(0)
        return TraderPolicy(
            build_model_for(config, momentum.strategic_names, momentum.tactical_names), config
        )

    straight = hrm_policy()
    RLTrainer(straight, momentum, config, progress=False).fit()
    again = hrm_policy()
    RLTrainer(again, momentum, config, progress=False).fit()
    stopped = hrm_policy()
    RLTrainer(stopped, momentum, config, checkpoint_dir=tmp_path, progress=False).fit(stop_after_updates=2)
    resumed = hrm_policy()
    history = RLTrainer(resumed, momentum, config, checkpoint_dir=tmp_path, progress=False).fit().history
    assert [h["update"] for h in history] == [1, 2, 3, 4]
    for other in (again, resumed):
        for (name, a), b in zip(straight.state_dict().items(), other.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


def test_grpo_groups_replay_one_start_and_score_rollouts_against_their_siblings(momentum):
    config = small_config(algorithm="grpo")
    env = ExposureEnv(momentum, config, 16, config.rl.rollout_bars, seed=0)
    starts = group_starts(env, config.rl, np.random.default_rng(0))
    assert (starts.reshape(-1, 4) == starts.reshape(-1, 4)[:, :1]).all()
    env.reset(starts)
    run = collect(env, mlp_policy(config), config.rl.rollout_bars, torch.Generator().manual_seed(0))
    assert run.dones[-1].all() and not run.dones[:-1].any()  # every replay lasts exactly one rollout
    advantages = group_advantages(run, 4)
    per_rollout = advantages[0].view(-1, 4)
    assert torch.allclose(per_rollout.mean(1), torch.zeros(4), atol=1e-5)
    assert (advantages == advantages[:1]).all()  # one verdict per rollout, given to all its steps
    assert not torch.equal(run.actions[:, 0], run.actions[:, 1])  # siblings differ only by sampling


def test_rewards_compute_what_they_document():
    config = small_config(reward="differential_sharpe")
    shaper = RewardShaper(config, 1)
    returns = torch.tensor([0.01, -0.02, 0.015, 0.003], dtype=torch.float64)
    eta = config.rl.differential_sharpe_eta
    a, b = 0.0, 1e-4
    for r in returns:
        got = shaper(
            r[None],
            torch.zeros(1, dtype=torch.float64),
            torch.zeros(1, dtype=torch.float64),
            torch.zeros(1, dtype=torch.bool),
        )
        sharpe = lambda a_, b_: a_ / (b_ - a_**2) ** 0.5  # noqa: E731
        numeric = (sharpe(a + eta * 1e-6 * (r - a), b + eta * 1e-6 * (r * r - b)) - sharpe(a, b)) / (
            eta * 1e-6
        )
        assert float(got[0]) == pytest.approx(float(numeric), rel=1e-3)
        a, b = a + eta * (r - a), b + eta * (r * r - b)

    config = small_config(reward="hierarchical", strategic_interval=2, drawdown_penalty=1.0, reward_scale=1.0)
    shaper = RewardShaper(config, 1)
    cost = config.trading.commission + config.trading.slippage
    z = torch.zeros(1, dtype=torch.float64)
    no = torch.zeros(1, dtype=torch.bool)
    first = shaper(
        torch.tensor([0.02], dtype=torch.float64),
        torch.tensor([1.0], dtype=torch.float64),
        torch.tensor([0.021], dtype=torch.float64),
        no,
    )
    assert float(first[0]) == pytest.approx(0.021 - cost, rel=1e-6)  # tactical only: entry quality
    second = shaper(torch.tensor([-0.01], dtype=torch.float64), z, z, no)
    growth = np.log(1.02) + np.log(0.99)
    assert float(second[0]) == pytest.approx(np.expm1(growth) - (-np.log(0.99)), rel=1e-5)  # strategic


def test_gaussian_policy_maths():
    mean, log_std = torch.tensor([0.1, -0.5]), torch.tensor([-1.0, 0.3])
    out = PolicyOutput(mean, log_std, torch.zeros(2))
    ref = PolicyOutput(torch.tensor([0.0, 0.2]), torch.tensor([-0.5, 0.1]), torch.zeros(2))
    normal = torch.distributions.Normal(mean, log_std.exp())
    action = torch.tensor([0.3, -0.1])
    assert torch.allclose(out.log_prob(action), normal.log_prob(action))
    assert torch.allclose(out.entropy(), normal.entropy())
    expected = torch.distributions.kl_divergence(
        normal, torch.distributions.Normal(ref.mean, ref.log_std.exp())
    )
    assert torch.allclose(out.kl_to(ref), expected) and torch.allclose(out.kl_to(out), torch.zeros(2))


def test_the_fine_tuned_model_serves_the_mean_rl_trained(momentum):
    config = small_config(algorithm="ppo", updates=6, learning_rate=3e-3)
    torch.manual_seed(0)
    model = build_model_for(config, momentum.strategic_names, momentum.tactical_names)
    policy = TraderPolicy(model, config)
    RLTrainer(policy, momentum, config, progress=False).fit()
    served = rollout(model, momentum, "test", config, act=True)  # what backtests and serving run
    rows = momentum.decision_rows("test", 20)[:50]
    env = ExposureEnv(momentum, config, 1, 64, seed=0, part="test")
    held, executed = torch.zeros(1), []
    with torch.no_grad():  # the policy's mean, bar by bar, reading the tilt it holds
        for row in rows:
            benchmark, cap = env.benchmark[row : row + 1], env.cap[row : row + 1]
            tilt = policy.mean(env.windows(np.array([row])), held_tilt(held, benchmark, config.policy))
            held = next_position(
                policy_target(tilt, benchmark, cap, config.policy), held, config.trading.no_trade_band
            )
            executed.append(float(held[0]))
    assert np.allclose(served.positions[:50], executed, atol=1e-6)
    assert (
        np.abs(np.diff(executed)).max() > 0
    )  # the tilt moves the position: not the benchmark agreeing with itself


def test_rl_models_are_cells_of_the_evaluation_harness(momentum):
    from hrm_core.workflows.evaluation import run_cell

    config = small_config(updates=2, worker_updates=1, n_envs=4, rollout_bars=8, group_size=2)
    stage = config.training.curriculum[0].model_copy(update={"episodes": 4})
    training = config.training.model_copy(update={"chunk_bars": 32, "batch_chunks": 2, "curriculum": [stage]})
    config = config.model_copy(update={"training": training})
    supervised = {}
    for name in ("hybrid_grpo", "hmtr"):
        row = run_cell(config, name, 0, 7, momentum, momentum, supervised)
        assert row["model"] == name and np.isfinite(row["sharpe"]) and len(row["returns"]) > 100
        if name == "hybrid_grpo":  # the cell's supervised HRM is kept, untouched by the fine-tuning
            kept = {k: v.clone() for k, v in supervised["hrm"].state_dict().items()}
    assert all(torch.equal(kept[k], v) for k, v in supervised["hrm"].state_dict().items())


@pytest.mark.slow
def test_train_command_runs_the_graph_with_rl_and_registers_its_model(project, capsys):
    """``hrm-trading train --algo grpo`` is the pipeline with GRPO after the curriculum: the stage
    runs in Dagster, its model is the registered candidate, backtested beside the baselines."""
    from pipelines.cli import main
    from tests.test_mlops import tiny_config

    config = tiny_config(project, rl={"updates": 2, "n_envs": 4, "rollout_bars": 8, "group_size": 2})
    assert main(["train", "--algo", "grpo", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "rl_finetune: 2 steps" in out and "registered hrm-trader version 1" in out
    assert "buy_and_hold" in out and "net of costs" in out
    summary = json.loads((project.parent / "hrm_home" / "reports" / "latest" / "summary.json").read_text())
    stage = summary["stages"]["rl_finetune"]
    assert stage["stage"] == "rl_grpo" and summary["registered_model"]["version"] == "1"
    assert list(summary["stages"]) == [
        "hrm_stage_1_basic",
        "hrm_stage_2_advanced",
        "hrm_stage_3_full",
        "rl_finetune",
    ]
