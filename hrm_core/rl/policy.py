"""The policy interface every model satisfies: a Gaussian over the tilt from the benchmark
(``model/exposure.py``) and a value estimate.

The mean is the model's own tilt in [−1, 1] (``exposure.policy_tilt``, reading the tilt held); an
action a ~ N(mean, σ) is executed as the benchmark plus ``max_tilt`` × clamp(a, −1, 1), within the
cap, through the no-trade band (``rl/env.py``). σ is one learned parameter
(state-independent, as in CleanRL), so the deterministic policy — the mean — is exactly what the
backtester, the agent and serving run: what RL trains is what is executed and served.

Observations: the decision bar's feature windows (what the models read) and the tilt held.
The critic is a small MLP on the windows' last rows and the tilt held, the same for every
policy, so the algorithms compare models and not critics. ``TraderPolicy`` wraps any trading
model (HRM with its ACT segments and one-step gradient, flat, GRU, H-MTR); ``MLPPolicy`` is the
plain baseline (and the policy of the stable-baselines3 comparison).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from hrm_core.core.config import HRMConfig
from hrm_core.model.act import run_segments
from hrm_core.model.agent import model_segments
from hrm_core.model.exposure import policy_tilt
from hrm_core.model.trader import MarketInputs, TraderBase

LOG_2PI = math.log(2 * math.pi)


@dataclass
class PolicyOutput:
    mean: torch.Tensor  # [N] in [−1, 1]
    log_std: torch.Tensor  # [N]
    value: torch.Tensor  # [N]

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        z = (action - self.mean) / self.log_std.exp()
        return -0.5 * (z * z + LOG_2PI) - self.log_std

    def entropy(self) -> torch.Tensor:
        return 0.5 * (1.0 + LOG_2PI) + self.log_std

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + self.log_std.exp() * noise

    def kl_to(self, reference: PolicyOutput) -> torch.Tensor:
        """KL(this ‖ reference) of the two Gaussians, per sample."""
        var, ref_var = (2 * self.log_std).exp(), (2 * reference.log_std).exp()
        gap = (self.mean - reference.mean) ** 2
        return reference.log_std - self.log_std + (var + gap) / (2 * ref_var) - 0.5


def flat_observation(inputs: MarketInputs, held: torch.Tensor) -> torch.Tensor:
    """[N, Fs + Ft + 1]: the last strategic and tactical rows and the exposure held."""
    return torch.cat([inputs.strategic[:, -1], inputs.tactical[:, -1], held[:, None]], dim=-1)


def mlp(inputs: int, hidden: int, outputs: int, out_gain: float) -> nn.Sequential:
    """Two tanh layers, initialised as CleanRL and SB3 do: orthogonal weights (gain √2, the output
    layer ``out_gain``: 0.01 for an actor, so it starts near a flat signal; 1 for a critic)."""
    layers = [nn.Linear(inputs, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, outputs)]
    for layer, gain in zip(layers, (math.sqrt(2), math.sqrt(2), out_gain), strict=True):
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(layers[0], nn.Tanh(), layers[1], nn.Tanh(), layers[2])


class Policy(nn.Module, ABC):
    """A Gaussian over the signal and the value of a state; subclasses define ``mean``."""

    def __init__(self, n_strategic: int, n_tactical: int, init_std: float, hidden: int = 64) -> None:
        super().__init__()
        self.log_std = nn.Parameter(torch.tensor(math.log(init_std)))
        self.critic = mlp(n_strategic + n_tactical + 1, hidden, 1, out_gain=1.0)

    @abstractmethod
    def mean(self, inputs: MarketInputs, held: torch.Tensor) -> torch.Tensor:
        """[N] the signal the policy would execute deterministically, in [−1, 1]."""

    def forward(self, inputs: MarketInputs, held: torch.Tensor) -> PolicyOutput:
        mean = self.mean(inputs, held)
        value = self.critic(flat_observation(inputs, held))[:, 0]
        return PolicyOutput(mean=mean, log_std=self.log_std.expand_as(mean), value=value)


class TraderPolicy(Policy):
    """A trading model as a policy: its segments (ACT as in the backtester) decide the mean."""

    def __init__(self, model: TraderBase, config: HRMConfig) -> None:
        super().__init__(model.n_strategic, model.n_tactical, config.rl.init_std)
        self.model = model
        self.segments, self.act = model_segments(model, config, act=True)

    def mean(self, inputs: MarketInputs, held: torch.Tensor) -> torch.Tensor:
        logit = run_segments(self.model, inputs, self.segments, self.act).final.tilt_logit
        return policy_tilt(logit, held, self.model.heads.hold, self.model.heads.tilt_gate)


class MLPPolicy(Policy):
    """Two tanh layers of 64 on the flat observation (SB3's default MLP policy)."""

    def __init__(self, n_strategic: int, n_tactical: int, init_std: float, hidden: int = 64) -> None:
        super().__init__(n_strategic, n_tactical, init_std, hidden)
        self.actor = mlp(n_strategic + n_tactical + 1, hidden, 1, out_gain=0.01)

    def mean(self, inputs: MarketInputs, held: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.actor(flat_observation(inputs, held))[:, 0])
