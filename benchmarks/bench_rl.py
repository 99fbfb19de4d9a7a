"""Our PPO against stable-baselines3's on the same env, the same MLP policy and the same
hyper-parameters (``rl:`` of the preset): learning curves over seeds on a generated market with a
learnable signal (the planted momentum market: exposure ∝ the tactical signal earns), judged by the
deterministic policy's out-of-sample Sharpe on the test part, net of costs; and training throughput
in env-steps/s (rollouts, with the feature windows gathered per step, plus updates) for the MLP and
the CPU-preset HRM at the same number of envs, beside SB3's MLP, in the same run, one torch thread
each. Throughput is timed after one warm-up update per policy, so the process's one-off costs (torch
imports its compiler stack on the first optimiser) are not charged to whichever policy runs first.

The policies match: two tanh layers of 64 for the actor and for the critic, a state-independent
log σ starting at log(rl.init_std); ours squashes the mean with tanh into the signal's range, SB3's
is linear and the env clips it, as SB3's ``Box`` actions are.

    python benchmarks/bench_rl.py [--updates 60] [--seeds 3] [--envs 16] [--throughput-only]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import gymnasium as gym
import numpy as np
import torch

from hrm_core.core.config import load_config
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.model.build import build_model_for
from hrm_core.rl.env import ExposureEnv
from hrm_core.rl.finetune import RLTrainer
from hrm_core.rl.policy import MLPPolicy, TraderPolicy, flat_observation
from hrm_core.rl.rollout import deterministic_returns

SMALL = {"hierarchical_features": {"high_level_lookback": 20, "low_level_lookback": 10}}


class GymExposureEnv(gym.Env):
    """One episode of ``ExposureEnv`` as a gymnasium env: the flat observation, a signal action."""

    def __init__(self, data, config, seed: int) -> None:
        self.env = ExposureEnv(data, config, 1, 256, seed)
        size = len(data.strategic_names) + len(data.tactical_names) + 1
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _obs(self) -> np.ndarray:
        return flat_observation(self.env.windows(self.env.rows.copy()), self.env.held)[0].numpy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.env.reset()
        return self._obs(), {}

    def step(self, action):
        reward, done, _ = self.env.step(torch.as_tensor(action, dtype=torch.float32).reshape(1))
        return self._obs(), float(reward[0]), bool(done[0]), False, {}


def oos_sharpe(decide, data, config) -> float:
    """The deterministic policy ``decide(inputs, held) -> signal`` through the test part."""
    rows = data.decision_rows("test", config.hierarchical_features.high_level_lookback)
    env = ExposureEnv(data, config, 1, len(rows), seed=0, part="test")
    net = deterministic_returns(decide, env, rows[0], len(rows) - 1)
    return float(net.mean() / net.std() * math.sqrt(252)) if net.std() > 0 else 0.0


def sb3(data, config, seed: int, checkpoints: list[int]) -> tuple[list[float], float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    rl = config.rl
    vec = DummyVecEnv([lambda k=k: GymExposureEnv(data, config, seed * 1000 + k) for k in range(rl.n_envs)])
    model = PPO(
        "MlpPolicy",
        vec,
        learning_rate=lambda progress: rl.learning_rate * progress,
        n_steps=rl.rollout_bars,
        batch_size=rl.n_envs * rl.rollout_bars // rl.minibatches,
        n_epochs=rl.epochs,
        gamma=rl.gamma,
        gae_lambda=rl.gae_lambda,
        clip_range=rl.clip,
        ent_coef=rl.entropy_coef,
        vf_coef=rl.value_coef,
        max_grad_norm=rl.max_grad_norm,
        policy_kwargs={"log_std_init": math.log(rl.init_std), "net_arch": {"pi": [64, 64], "vf": [64, 64]}},
        seed=seed,
        device="cpu",
    )
    curve, seconds, done = [], 0.0, 0
    steps = rl.n_envs * rl.rollout_bars
    for upto in checkpoints:
        started = time.perf_counter()
        model.learn((upto - done) * steps, reset_num_timesteps=False)
        seconds += time.perf_counter() - started
        done = upto

        def decide(inputs, held):
            obs = flat_observation(inputs, held).numpy()
            return torch.as_tensor(model.predict(obs, deterministic=True)[0][:, 0]).clamp(-1, 1)

        curve.append(oos_sharpe(decide, data, config))
    return curve, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--envs", type=int, default=16, help="N: episodes stepped together")
    parser.add_argument("--throughput-only", action="store_true", help="skip the learning curves")
    args = parser.parse_args()
    torch.set_num_threads(1)
    throughput = policy_throughput(args.envs)
    print(f"PPO env-steps/s at N = {args.envs}: " + ", ".join(f"{k} {v:,}" for k, v in throughput.items()))
    if args.throughput_only:
        return
    config = load_config(
        "configs/hrm_cpu_small.yaml",
        **SMALL,
        rl={"updates": args.updates, "n_envs": args.envs, "rollout_bars": 32},
    )
    data = planted_regime_market(3000, seed=1, regime=1.0)
    checkpoints = sorted({max(1, args.updates * k // 4) for k in range(1, 5)})
    results = {"checkpoints": checkpoints, "ours": {}, "sb3": {}, "ppo_env_steps_per_s": throughput}
    steps = args.updates * config.rl.n_envs * config.rl.rollout_bars
    for name, run in (("ours", ours_curve), ("sb3", sb3)):
        curves, seconds = [], []
        for seed in range(args.seeds):
            curve, took = run(data, config, seed, checkpoints)
            curves.append(curve)
            seconds.append(took)
            shown = [round(c, 2) for c in curve]
            print(f"{name} seed {seed}: OOS Sharpe at updates {checkpoints}: {shown} ({took:.1f} s)")
        curves = np.array(curves)
        results[name] = {
            "mean": curves.mean(0).round(3).tolist(),
            "std": curves.std(0, ddof=1).round(3).tolist() if args.seeds > 1 else [0.0] * len(checkpoints),
            "env_steps_per_s": round(steps / float(np.mean(seconds))),
        }
    print(json.dumps(results, indent=2))


def policy_throughput(n_envs: int, updates: int = 3) -> dict[str, int]:
    """PPO env-steps/s (rollout and update) of the MLP and of the CPU preset's HRM (its ACT
    segments, full-size windows) on the same market at the same ``n_envs``, one after the other in
    this process; each policy first runs one untimed update."""
    config = load_config("configs/hrm_cpu_small.yaml", rl={"n_envs": n_envs, "rollout_bars": 32})
    data = planted_regime_market(3000, seed=1, regime=1.0)
    names = (data.strategic_names, data.tactical_names)
    policies = {
        "mlp": MLPPolicy(len(names[0]), len(names[1]), config.rl.init_std),
        "hrm": TraderPolicy(build_model_for(config, *names), config),
    }
    out = {}
    for name, policy in policies.items():
        trainer = RLTrainer(policy, data, config, "ppo", progress=False)
        trainer.fit(stop_after_updates=1)
        started = time.perf_counter()
        trainer.fit(stop_after_updates=updates)
        out[name] = round(updates * n_envs * config.rl.rollout_bars / (time.perf_counter() - started))
    return out


def ours_curve(data, config, seed: int, checkpoints: list[int]) -> tuple[list[float], float]:
    """Our PPO, scored at each checkpoint of one continuing run (a stop and exact resume)."""
    import tempfile

    torch.manual_seed(seed)
    policy = MLPPolicy(4, 4, config.rl.init_std)
    run_config = config.model_copy(update={"seed": seed})
    curve, seconds, done = [], 0.0, 0
    with tempfile.TemporaryDirectory() as folder:
        for upto in checkpoints:
            trainer = RLTrainer(policy, data, run_config, "ppo", checkpoint_dir=folder, progress=False)
            started = time.perf_counter()
            trainer.fit(stop_after_updates=upto - done)
            seconds += time.perf_counter() - started
            done = upto
            curve.append(oos_sharpe(lambda i, h: policy(i, h).mean, data, config))
    return curve, seconds


if __name__ == "__main__":
    main()
