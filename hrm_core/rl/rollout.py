"""Collecting experience: ``bars`` steps of every episode of an ``ExposureEnv``, and the clipped
policy-gradient update every algorithm here shares (they differ in their advantages and in which
of the value and KL terms they use)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hrm_core.core.config import RLConfig
from hrm_core.model.trader import MarketInputs
from hrm_core.rl.env import ExposureEnv
from hrm_core.rl.policy import Policy


@dataclass
class Rollout:
    """[T, N] per step and episode; windows are gathered again from ``rows`` when updating."""

    rows: torch.Tensor
    held: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor  # the episode ended after this step
    net: torch.Tensor  # net simple returns
    last_value: torch.Tensor  # [N] value of the state after the last step


@dataclass
class Learner:
    """What an algorithm's update works with: the policy and its optimiser, the env, the settings,
    the RNGs (actions, minibatch order), the frozen reference policy (KL) and an extra penalty on
    the model's weights (EWC across H-MTR task phases)."""

    policy: Policy
    optimizer: torch.optim.Optimizer
    env: ExposureEnv
    rl: RLConfig
    generator: torch.Generator
    rng: np.random.Generator
    reference: Policy | None = None
    penalty: Callable[[Policy], torch.Tensor] | None = None


@torch.no_grad()
def collect(env: ExposureEnv, policy: Policy, bars: int, generator: torch.Generator) -> Rollout:
    """Run ``policy`` (sampling its Gaussian) for ``bars`` steps of every episode."""
    policy.eval()
    steps: dict[str, list] = {k: [] for k in ("rows", "held", "actions", "log_probs", "values")}
    steps |= {"rewards": [], "dones": [], "net": []}
    for _ in range(bars):
        rows = torch.from_numpy(env.rows.copy())
        out = policy(env.windows(rows), env.held_tilt)
        action = out.sample(generator)
        steps["rows"].append(rows)
        steps["held"].append(env.held_tilt)
        steps["actions"].append(action)
        steps["log_probs"].append(out.log_prob(action))
        steps["values"].append(out.value)
        reward, done, net = env.step(action)
        steps["rewards"].append(reward)
        steps["dones"].append(done)
        steps["net"].append(net)
    last = policy(env.windows(env.rows.copy()), env.held_tilt).value
    return Rollout(**{k: torch.stack(v) for k, v in steps.items()}, last_value=last)


@torch.no_grad()
def deterministic_returns(
    decide: Callable[[MarketInputs, torch.Tensor], torch.Tensor],
    env: ExposureEnv,
    start_row: int,
    bars: int,
    active: bool = False,
) -> np.ndarray:
    """Net returns (``active``: less the benchmark policy's) of a deterministic policy
    ``decide(inputs, held_tilt) -> tilt`` run for up to ``bars`` steps of one episode from
    ``start_row`` (an env of one episode), in the engine."""
    env.reset(np.array([start_row]))
    net = []
    for _ in range(bars):
        _, done, r = env.step(decide(env.windows(env.rows.copy()), env.held_tilt))
        net.append(float(env.active[0] if active else r[0]))
        if bool(done[0]):
            break
    return np.asarray(net)


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 − Var(returns − values) / Var(returns): how much of the return the critic explains."""
    variance = float(returns.var())
    return float("nan") if variance == 0 else 1.0 - float((returns - values).var()) / variance


def clipped_update(
    learner: Learner,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor | None,
    use_reference: bool,
    normalise: bool = True,
) -> dict[str, float]:
    """``rl.epochs`` passes of ``rl.minibatches`` minibatches: PPO's clipped surrogate on
    ``advantages`` (normalised per minibatch when ``normalise``), a value loss toward ``returns``
    when given, an entropy bonus, the KL to the reference when ``use_reference`` and the learner's
    penalty when it has one; gradients clipped."""
    policy, env, rl, reference = learner.policy, learner.env, learner.rl, learner.reference
    policy.train()
    flat = {k: getattr(rollout, k).reshape(-1) for k in ("rows", "held", "actions", "log_probs")}
    advantages = advantages.reshape(-1)
    returns = None if returns is None else returns.reshape(-1)
    size = len(advantages)
    batch = max(1, size // rl.minibatches)
    logged = ("policy_loss", "value_loss", "entropy", "kl", "clip_fraction", "kl_reference")
    stats: dict[str, list[float]] = {k: [] for k in logged}
    for _ in range(rl.epochs):
        order = torch.from_numpy(learner.rng.permutation(size))
        for start in range(0, size, batch):
            mb = order[start : start + batch]
            inputs, held = env.windows(flat["rows"][mb]), flat["held"][mb]
            out = policy(inputs, held)
            log_ratio = out.log_prob(flat["actions"][mb]) - flat["log_probs"][mb]
            ratio = log_ratio.exp()
            adv = advantages[mb]
            if normalise and len(mb) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            policy_loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - rl.clip, 1 + rl.clip)).mean()
            entropy = out.entropy().mean()
            loss = policy_loss - rl.entropy_coef * entropy
            if returns is not None:
                value_loss = 0.5 * (out.value - returns[mb]).pow(2).mean()
                loss = loss + rl.value_coef * value_loss
                stats["value_loss"].append(float(value_loss.detach()))
            if use_reference and reference is not None:
                with torch.no_grad():
                    ref = reference(inputs, held)
                kl_reference = out.kl_to(ref).mean()
                loss = loss + rl.kl_coef * kl_reference
                stats["kl_reference"].append(float(kl_reference.detach()))
            if learner.penalty is not None:
                loss = loss + learner.penalty(policy)
            learner.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), rl.max_grad_norm)
            learner.optimizer.step()
            with torch.no_grad():
                stats["kl"].append(float(((ratio - 1) - log_ratio).mean()))
                stats["clip_fraction"].append(float(((ratio - 1).abs() > rl.clip).float().mean()))
            stats["policy_loss"].append(float(policy_loss.detach()))
            stats["entropy"].append(float(entropy.detach()))
    return {k: float(np.mean(v)) for k, v in stats.items() if v}
