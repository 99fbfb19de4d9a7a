"""PPO (Schulman et al. 2017), as in CleanRL's ``ppo_continuous_action.py``: continuous rollouts
of every episode (they restart at random training bars when they end), advantages by GAE(λ),
then minibatch epochs of the clipped surrogate with a value loss and an entropy bonus."""

from __future__ import annotations

import torch

from hrm_core.rl.rollout import Learner, Rollout, clipped_update, collect, explained_variance


def gae(rollout: Rollout, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns [T, N] by generalised advantage estimation. An episode that ended
    after step t bootstraps nothing past it (the next state belongs to a new episode)."""
    rewards, values, dones = rollout.rewards, rollout.values, rollout.dones.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        next_value = rollout.last_value if t == len(rewards) - 1 else values[t + 1]
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        running = delta + gamma * lam * live * running
        advantages[t] = running
    return advantages, advantages + values


def update(learner: Learner) -> dict[str, float]:
    """One PPO update: collect ``rollout_bars`` steps of every episode, then optimise."""
    rl = learner.rl
    rollout = collect(learner.env, learner.policy, rl.rollout_bars, learner.generator)
    advantages, returns = gae(rollout, rl.gamma, rl.gae_lambda)
    stats = clipped_update(learner, rollout, advantages, returns, use_reference=False)
    return stats | {
        "explained_variance": explained_variance(rollout.values.reshape(-1), returns.reshape(-1)),
        "reward": float(rollout.rewards.mean()),
        "net_return": float(rollout.net.mean()),
    }
