"""Elastic Weight Consolidation's penalty (Kirkpatrick et al. 2017): strength/2 · Σ F_i (θ_i − θ*_i)²,
with θ* the weights to keep near and F a diagonal Fisher information. The supervised trainer
(``training.ewc``) and the H-MTR phases (``rl.hmtr``) estimate F from their own losses; both scale
it to mean 1 over all parameters, so the strength says how much the old data weighs whatever the
model size or loss scale."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EWC:
    anchor: dict[str, torch.Tensor]  # θ*: the weights before retraining
    fisher: dict[str, torch.Tensor]  # F: diagonal Fisher information on the old data
    strength: float

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """strength/2 · Σ F (θ − θ*)²."""
        total = sum(
            (self.fisher[name] * (p - self.anchor[name]).pow(2)).sum()
            for name, p in model.named_parameters()
            if name in self.fisher
        )
        return 0.5 * self.strength * total


def scaled_to_mean_one(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``fisher`` divided by its mean over every parameter (floored, so an all-zero Fisher stays 0)."""
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean().clamp_min(1e-30)
    return {name: f / mean for name, f in fisher.items()}
