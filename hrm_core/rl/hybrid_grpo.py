"""HybridGRPO (this project's definition of the seed's "Level 2"): GRPO's grouped replays and KL
to the reference, with PPO's critic. The advantage of step t of rollout i is

    A(i, t) = standardised GAE(λ) advantage(i, t) + group-normalised episode return(i)

so each step gets the critic's credit assignment within the episode (which bars helped) and the
group's verdict on the whole rollout against its siblings from the same start (which behaviour
helped, free of the critic's bias). The critic trains on the GAE returns as in PPO."""

from __future__ import annotations

from hrm_core.rl.grpo import episode_returns, group_advantages, group_starts
from hrm_core.rl.ppo import gae
from hrm_core.rl.rollout import Learner, clipped_update, collect, explained_variance


def update(learner: Learner) -> dict[str, float]:
    """One HybridGRPO update: grouped replays, critic and group advantages combined, optimise."""
    rl, env = learner.rl, learner.env
    env.reset(group_starts(env, rl, learner.rng))
    rollout = collect(env, learner.policy, rl.rollout_bars, learner.generator)
    step_advantages, returns = gae(rollout, rl.gamma, rl.gae_lambda)
    step_advantages = (step_advantages - step_advantages.mean()) / (step_advantages.std() + 1e-8)
    advantages = step_advantages + group_advantages(rollout, rl.group_size)
    stats = clipped_update(learner, rollout, advantages, returns, use_reference=True, normalise=False)
    return stats | {
        "explained_variance": explained_variance(rollout.values.reshape(-1), returns.reshape(-1)),
        "reward": float(episode_returns(rollout).mean()),
        "net_return": float(rollout.net.mean()),
    }
