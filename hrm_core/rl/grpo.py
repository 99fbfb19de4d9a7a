"""GRPO (Shao et al. 2024, DeepSeekMath), critic-free: every update replays ``n_envs / group_size``
start bars of the training part, each ``group_size`` times with the same account (a historical
replay can be reset). Each rollout's advantage is its episode return normalised within its group,
given to every step of the rollout; the loss is PPO's clipped surrogate plus ``kl_coef`` × the KL
to the reference policy (the policy fine-tuning started from: the supervised model)."""

from __future__ import annotations

import numpy as np
import torch

from hrm_core.core.config import RLConfig
from hrm_core.rl.env import ExposureEnv
from hrm_core.rl.rollout import Learner, Rollout, clipped_update, collect


def group_starts(env: ExposureEnv, rl: RLConfig, rng: np.random.Generator) -> np.ndarray:
    """[n_envs] start rows: each group's start repeated ``group_size`` times, chosen among the
    starts whose whole episode of ``rollout_bars`` lies inside one symbol's part."""
    vec = env.vec
    room = np.array([vec.run_end[int(s)] - s >= rl.rollout_bars for s in vec.starts])
    candidates = vec.starts[room] if room.any() else vec.starts
    starts = rng.choice(candidates, size=rl.n_envs // rl.group_size)
    return np.repeat(starts, rl.group_size)


def episode_returns(rollout: Rollout) -> torch.Tensor:
    """[N] each rollout's summed reward up to (and including) the step its episode ended."""
    ended_before = torch.cumsum(rollout.dones.float(), dim=0) - rollout.dones.float()
    return (rollout.rewards * (ended_before == 0)).sum(0)


def group_advantages(rollout: Rollout, group_size: int) -> torch.Tensor:
    """[T, N] each rollout's return normalised within its group, the same at every step."""
    returns = episode_returns(rollout).view(-1, group_size)
    normalised = (returns - returns.mean(1, keepdim=True)) / (returns.std(1, keepdim=True) + 1e-8)
    return normalised.reshape(1, -1).expand_as(rollout.rewards)


def update(learner: Learner) -> dict[str, float]:
    """One GRPO update: replay the groups, score them within each group, optimise."""
    rl, env = learner.rl, learner.env
    env.reset(group_starts(env, rl, learner.rng))
    rollout = collect(env, learner.policy, rl.rollout_bars, learner.generator)
    advantages = group_advantages(rollout, rl.group_size)
    stats = clipped_update(learner, rollout, advantages, None, use_reference=True, normalise=False)
    return stats | {"reward": float(episode_returns(rollout).mean()), "net_return": float(rollout.net.mean())}
