"""The RL fine-tuning runner: one policy, one algorithm (``rl.algorithm``), ``rl.updates`` updates
on the training part, with learning-rate annealing, checkpoints every ``rl.checkpoint_every``
updates that resume exactly (weights, optimiser, environments and every RNG), bit-identical seeded
runs on CPU and a tqdm bar, as in the supervised trainer.

The policy starts from the model given (the supervised curriculum's model, ``rl.start:
supervised``) or from fresh weights; GRPO and HybridGRPO keep a frozen copy of the starting policy
as the KL reference. What comes out is the same trading model, its signal head now the RL policy's
mean, so it is backtested, registered and served like any other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hrm_core.core.checkpoint import load_checkpoint, save_checkpoint
from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData
from hrm_core.rl import grpo, hybrid_grpo, ppo
from hrm_core.rl.env import ExposureEnv
from hrm_core.rl.policy import Policy
from hrm_core.rl.rollout import Learner

ALGORITHMS: dict[str, ModuleType] = {"ppo": ppo, "grpo": grpo, "hybrid_grpo": hybrid_grpo}
PPO_EPISODE_BARS = 256  # PPO's episodes span several rollouts; GRPO's last exactly one


@dataclass
class RLResult:
    policy: Policy
    history: list[dict[str, Any]] = field(default_factory=list)


class RLTrainer:
    def __init__(
        self,
        policy: Policy,
        data: MarketData,
        config: HRMConfig,
        algorithm: str | None = None,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        allowed_starts: np.ndarray | None = None,
        penalty: Callable[[Policy], torch.Tensor] | None = None,
        description: str | None = None,
    ) -> None:
        """``penalty(model) -> tensor`` is added to every loss (EWC across H-MTR task phases)."""
        self.rl = config.rl
        self.name = algorithm or config.rl.algorithm
        if self.name not in ALGORITHMS:
            raise ValueError(f"RLTrainer: unknown algorithm {self.name!r}; known: {', '.join(ALGORITHMS)}")
        self.algorithm = ALGORITHMS[self.name]
        self.policy, self.progress = policy, progress
        self.description = description or self.name
        torch.manual_seed(config.seed)
        grouped = self.name != "ppo"
        episode_bars = self.rl.rollout_bars if grouped else PPO_EPISODE_BARS
        self.env = ExposureEnv(
            data, config, self.rl.n_envs, episode_bars, config.seed, "train", allowed_starts
        )
        self.env.reset()
        self.reference = copy.deepcopy(policy).eval().requires_grad_(False) if grouped else None
        self.optimizer = torch.optim.Adam(
            [p for p in policy.parameters() if p.requires_grad], lr=self.rl.learning_rate, eps=1e-5
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.checkpoint_path = Path(checkpoint_dir) / "rl_last.pt" if checkpoint_dir else None
        self.learner = Learner(
            policy, self.optimizer, self.env, self.rl, self.generator, self.rng, self.reference, penalty
        )

    def fit(self, stop_after_updates: int | None = None) -> RLResult:
        """Run (or resume) the updates; ``stop_after_updates`` stops early as a kill would."""
        start, history = self._resume()
        bar = tqdm(total=self.rl.updates, initial=start, desc=self.description, disable=not self.progress)
        for update in range(start, self.rl.updates):
            if self.rl.anneal_lr:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.rl.learning_rate * (1.0 - update / self.rl.updates)
            stats = self.algorithm.update(self.learner)
            history.append({"update": update + 1, **stats})
            bar.update(1)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.4f}")
            done = update + 1
            if self.checkpoint_path and (done % self.rl.checkpoint_every == 0 or done == self.rl.updates):
                self._save(done, history)
            if stop_after_updates is not None and done - start >= stop_after_updates:
                self._save(done, history)
                break
        bar.close()
        return RLResult(self.policy, history)

    def _save(self, done: int, history: list[dict[str, Any]]) -> None:
        if not self.checkpoint_path:
            return
        save_checkpoint(
            self.checkpoint_path,
            {
                "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "updates": done,
                "history": history,
                "env": self.env.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "generator": self.generator.get_state(),
                "numpy_rng": self.rng.bit_generator.state,
            },
        )

    def _resume(self) -> tuple[int, list[dict[str, Any]]]:
        if not self.checkpoint_path or not self.checkpoint_path.exists():
            return 0, []
        saved = load_checkpoint(self.checkpoint_path)
        self.policy.load_state_dict(saved["policy"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.env.load_state_dict(saved["env"])
        torch.set_rng_state(saved["torch_rng"])
        self.generator.set_state(saved["generator"])
        self.rng.bit_generator.state = saved["numpy_rng"]
        return saved["updates"], saved["history"]
