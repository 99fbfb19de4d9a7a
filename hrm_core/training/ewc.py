"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) for retraining on new data without
erasing what the model learned on the old: the loss gains strength/2 · Σ F_i (θ_i − θ*_i)², where
θ* are the weights before retraining and F the diagonal Fisher information of the old training
data, estimated as the mean squared gradient of the training loss over batches of old chunks
(the empirical Fisher at batch level: one gradient per batch, which is what the trainer computes).
Batch gradients of a trained model are tiny, so F is scaled to mean 1 over all parameters: the
strength then says how much the old data weighs, whatever the model size or loss scale."""

from __future__ import annotations

import numpy as np
import torch

from hrm_core.core.config import HRMConfig
from hrm_core.core.ewc import EWC, scaled_to_mean_one
from hrm_core.dataset.market import MarketData
from hrm_core.dataset.windows import WindowSampler
from hrm_core.model.act import run_segments
from hrm_core.model.trader import TraderBase
from hrm_core.training.losses import act_loss


def fisher_information(
    model: TraderBase, data: MarketData, config: HRMConfig, batches: int = 16
) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the training loss over ``batches`` batches of ``data``'s training
    chunks (deep supervision, no ACT exploration), per parameter."""
    device = next(model.parameters()).device
    sampler = WindowSampler(data, config, device)
    starts = sampler.chunk_starts("train")
    rng = np.random.default_rng(config.seed)
    segments = config.training.deep_supervision_segments
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    model.train()
    for _ in range(batches):
        chunks = sampler.sample(starts, config.training.batch_chunks, rng)
        run = run_segments(model, chunks.inputs, segments, act=False)
        loss, _ = act_loss(run, chunks, config, act=False, heads=model.heads)
        model.zero_grad(set_to_none=True)
        loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                fisher[name] += p.grad.detach().pow(2) / batches
    model.zero_grad(set_to_none=True)
    return scaled_to_mean_one(fisher)


def ewc_from(model: TraderBase, old_data: MarketData, config: HRMConfig) -> EWC:
    """EWC anchored at ``model``'s current weights with the Fisher of ``old_data``."""
    anchor = {name: p.detach().clone() for name, p in model.named_parameters()}
    return EWC(anchor, fisher_information(model, old_data, config), config.training.ewc_strength)
