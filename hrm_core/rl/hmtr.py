"""Training the H-MTR (``model/hmtr.py``): workers first, one task phase each, then the master.

1. Worker phases. For each task with data, in ``TASKS`` order, worker k alone drives the signal
   (``active_worker``) and PPO trains it with the shared backbone on that task's market (scenario
   markets and the training bars tagged with the task), on the configured reward. The master and
   the other workers are frozen. After a phase, the backbone's Fisher information under the
   worker's policy is estimated, and later phases pay EWC — strength/2 · Σ F (θ − θ*)² — for
   moving what earlier workers rely on (continual learning across task phases).
2. Master phase. Backbone and workers frozen; PPO trains the master's weighting and risk budget on
   the portfolio reward of the whole market, the executed signal being budget × Σ weight·signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm_core.core.config import HRMConfig
from hrm_core.core.ewc import EWC, scaled_to_mean_one
from hrm_core.core.vocabulary import TASKS
from hrm_core.dataset.market import MarketData
from hrm_core.model.hmtr import HMTRGRUTrader, HMTRTrader
from hrm_core.rl.env import ExposureEnv
from hrm_core.rl.finetune import RLTrainer
from hrm_core.rl.policy import TraderPolicy
from hrm_core.rl.rollout import collect

FISHER_SAMPLES = 64


@dataclass
class HMTRResult:
    model: HMTRTrader | HMTRGRUTrader
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # phase -> updates


def worker_parameters(model: HMTRTrader | HMTRGRUTrader) -> dict[str, torch.Parameter]:
    """The backbone and the worker heads: what worker phases train and EWC protects (a worker's
    head gets gradient only from its own task, so across tasks EWC guards the shared backbone;
    across retrains of one worker it guards its head too)."""
    return {n: p for n, p in model.named_parameters() if not n.startswith(("route.master", "route.budget"))}


def policy_fisher(
    policy: TraderPolicy, env: ExposureEnv, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of the backbone under ``policy`` on the states it visits: for a
    Gaussian policy it is E[(∂μ/∂θ)²]/σ², estimated per sample over ``FISHER_SAMPLES`` states and
    scaled to mean 1 (so ``ewc_strength`` means the same whatever the model size)."""
    rollout = collect(env, policy, max(1, FISHER_SAMPLES // env.n_envs), generator)
    rows, held = rollout.rows.reshape(-1)[:FISHER_SAMPLES], rollout.held.reshape(-1)[:FISHER_SAMPLES]
    shared = worker_parameters(policy.model)
    fisher = {name: torch.zeros_like(p) for name, p in shared.items()}
    policy.eval()
    for row, h in zip(rows, held, strict=True):
        mean = policy.mean(env.windows(row[None]), h[None])
        grads = torch.autograd.grad(mean.sum(), list(shared.values()), allow_unused=True)
        for name, g in zip(shared, grads, strict=True):
            if g is not None:
                fisher[name] += g.pow(2) / len(rows)
    return scaled_to_mean_one(fisher)


def _only_trainable(model: torch.nn.Module, trainable: set[str]) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)


def train_workers(
    model: HMTRTrader | HMTRGRUTrader,
    task_data: dict[str, tuple[MarketData, np.ndarray | None]],
    config: HRMConfig,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    anchors: list[EWC] | None = None,
    ewc: bool = True,
) -> tuple[dict[str, list[dict[str, Any]]], list[EWC]]:
    """Phase 1: each task's worker in turn on (data, allowed start rows) ``task_data[task]``. With
    ``ewc``, every phase pays EWC to the phases before it: those of this call and ``anchors``
    (the phases of an earlier training, when retraining). Returns the history and all anchors."""
    phase_config = config.model_copy(
        update={"rl": config.rl.model_copy(update={"updates": config.rl.worker_updates})}
    )
    anchors = list(anchors or []) if ewc else []
    history = {}
    for k, task in enumerate(TASKS):
        if task not in task_data:
            continue
        data, starts = task_data[task]
        model.active_worker = k
        _only_trainable(model, set(worker_parameters(model)))
        policy = TraderPolicy(model, phase_config)
        penalty = (lambda p, a=tuple(anchors): sum(e.penalty(p.model) for e in a)) if anchors else None
        trainer = RLTrainer(
            policy,
            data,
            phase_config,
            algorithm="ppo",
            checkpoint_dir=Path(checkpoint_dir) / f"worker_{task}" if checkpoint_dir else None,
            progress=progress,
            allowed_starts=starts,
            penalty=penalty,
            description=f"H-MTR worker {task}",
        )
        history[f"worker_{task}"] = trainer.fit().history
        if ewc and config.rl.ewc_strength > 0:
            anchor = {name: p.detach().clone() for name, p in worker_parameters(model).items()}
            anchors.append(
                EWC(anchor, policy_fisher(policy, trainer.env, trainer.generator), config.rl.ewc_strength)
            )
    model.active_worker = None
    model.requires_grad_(True)
    return history, anchors


def train_master(
    model: HMTRTrader | HMTRGRUTrader,
    data: MarketData,
    config: HRMConfig,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Phase 2: the master's weighting and budget by PPO on ``data``'s training bars."""
    model.active_worker = None
    _only_trainable(
        model, {n for n, _ in model.named_parameters() if n.startswith(("route.master", "route.budget"))}
    )
    trainer = RLTrainer(
        TraderPolicy(model, config),
        data,
        config,
        algorithm="ppo",
        checkpoint_dir=Path(checkpoint_dir) / "master" if checkpoint_dir else None,
        progress=progress,
        description="H-MTR master",
    )
    history = trainer.fit().history
    model.requires_grad_(True)
    return history


def train_hmtr(
    model: HMTRTrader | HMTRGRUTrader,
    data: MarketData,
    config: HRMConfig,
    task_data: dict[str, tuple[MarketData, np.ndarray | None]] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> HMTRResult:
    """Both phases. ``task_data`` defaults to ``data`` with each task's tagged training bars as
    its workers' start rows (the scenario symbols supply tags the real data lacks)."""
    if task_data is None:
        task_data = tagged_task_data(data, config)
    history, _ = train_workers(model, task_data, config, checkpoint_dir, progress)
    history["master"] = train_master(model, data, config, checkpoint_dir, progress)
    return HMTRResult(model, history)


def tagged_task_data(data: MarketData, config: HRMConfig) -> dict[str, tuple[MarketData, np.ndarray]]:
    """Per task with tagged training decision bars: the data and those bars as episode starts."""
    decisions = data.decision_rows("train", config.hierarchical_features.high_level_lookback)
    out = {}
    for k, task in enumerate(TASKS):
        rows = decisions[data.task[decisions] == k]
        if len(rows):
            out[task] = (data, rows)
    return out
