"""Streaming decisions, one bar at a time: the seed's ``HRMTradingEnv.step`` loop.

Each bar the agent runs the model's segments on the bar's windows until the Q head halts (ACT) or
the budget is spent, turns its tilt from the benchmark (reading the position held) into a target
exposure and, through the no-trade band, into the position and the seed's action
(``exposure.py``). With ``h_update_interval`` 1 (the default) this is exactly the decision the
batch model makes on the same bar, which is how it was trained. A larger interval keeps z_H across
bars and refreshes it only every that many bars (segments in between update L alone): cheaper, but
a mode the trainer never saw, so it is off by default.

On CPU the HRM decides through its numba kernels (``compiled.py``), which compute the same decision
without torch's per-operation overhead (86 ms → under 5 ms a bar at the CPU preset's 8 segments);
baselines, the H-MTR and CUDA models run eagerly. The agent reads the model's weights and cycles
when it is made: make a new agent after training further.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hrm_core.core.config import HRMConfig
from hrm_core.core.vocabulary import REGIMES
from hrm_core.model.act import run_segments
from hrm_core.model.compiled import (
    LOG_VOLATILITY,
    Q_CONTINUE,
    Q_HALT,
    REGIME_0,
    TILT_LOGIT,
    UP_LOGIT,
    CompiledHRM,
)
from hrm_core.model.exposure import action_of, decide_exposure
from hrm_core.model.heads import TradingOutputs
from hrm_core.model.hrm import HRMTrader
from hrm_core.model.trader import Carry, MarketInputs, TraderBase


@dataclass
class Decision:
    """The decision for each sample of one bar, and the full head outputs."""

    action_index: torch.Tensor  # [B] into ACTIONS
    tilt: torch.Tensor  # [B] the tilt from the benchmark, in [−1, 1]
    target: torch.Tensor  # [B] target exposure (benchmark + max_tilt × tilt, within the cap)
    position: torch.Tensor  # [B] exposure after the band: what the engine is asked to hold
    confidence: torch.Tensor  # [B]
    segments: torch.Tensor  # [B] ACT segments used
    outputs: TradingOutputs


def model_segments(model: TraderBase, config: HRMConfig, act: bool) -> tuple[int, bool]:
    """Segment budget and whether ACT halts, as the model was trained: the HRM's ACT budget or its
    deep-supervision segments; a baseline's single pass (further passes would repeat it)."""
    if not model.recurrent:
        return 1, False
    return (config.model.halt_max_steps, True) if act else (config.training.deep_supervision_segments, False)


def compiles(model: TraderBase) -> bool:
    """Whether the numba kernels can run ``model``: the HRM itself (not a subclass with other
    heads, such as the H-MTR) on CPU."""
    return type(model) is HRMTrader and next(model.parameters()).device.type == "cpu"


class HRMTradingAgent:
    def __init__(self, model: TraderBase, config: HRMConfig, act: bool, compiled: bool = True) -> None:
        self.model = model
        self.compiled = CompiledHRM.from_model(model) if compiled and compiles(model) else None
        self.segments, self.act = model_segments(model, config, act)
        self.band = config.trading.no_trade_band
        self.policy = config.policy
        self.h_update_interval = config.model.h_update_interval
        self.reset()

    def reset(self) -> None:
        """Forget the carried strategic state (a new episode)."""
        self.bar = 0
        self.z_H: torch.Tensor | None = None

    @torch.inference_mode()
    def decide(
        self, inputs: MarketInputs, cap: torch.Tensor, held: torch.Tensor, benchmark: torch.Tensor
    ) -> Decision:
        """One decision per sample for the current bar (deterministic: no exploration), given the
        sizing cap, the exposure held (the previous decision's position) and the benchmark's
        exposure at this bar."""
        refresh = self.z_H is None or self.bar % self.h_update_interval == 0
        if self.compiled is not None:
            out, steps = self._decide_compiled(inputs, refresh)
        else:
            carry = self.model.initial_carry(inputs.batch)  # a refresh starts H afresh, as in training
            if not refresh:
                carry = Carry(z_H=self.z_H, z_L=carry.z_L)
            run = run_segments(self.model, inputs, self.segments, self.act, carry=carry, update_H=refresh)
            self.z_H, out, steps = run.carry.z_H, run.final, run.steps
        self.bar += 1
        heads = self.model.heads
        if self.compiled is not None:  # in numpy, as the served model decides: the same float32 bits
            numpy = [np.ascontiguousarray(t.cpu().numpy(), dtype=np.float32) for t in (held, benchmark, cap)]
            weights = [np.float32(p.detach().cpu().item()) for p in (heads.hold, heads.tilt_gate)]
            exposure = decide_exposure(out.tilt_logit.numpy(), *numpy, *weights, self.policy, self.band)
            tilt, target, position = (torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in exposure)
        else:
            tilt, target, position = decide_exposure(
                out.tilt_logit, held, benchmark, cap, heads.hold, heads.tilt_gate, self.policy, self.band
            )
        return Decision(
            action_index=action_of(position, held),
            tilt=tilt,
            target=target,
            position=position,
            confidence=out.confidence(position),
            segments=steps,
            outputs=out,
        )

    def _decide_compiled(self, inputs: MarketInputs, refresh: bool) -> tuple[TradingOutputs, torch.Tensor]:
        """The head outputs and segments used, from the kernels; z_H carried as a tensor."""
        raw, steps, z_H = self.compiled.run(
            inputs.strategic.numpy(),
            inputs.tactical.numpy(),
            self.segments,
            self.act,
            z_H=None if refresh else self.z_H.numpy(),
            update_H=refresh,
        )
        self.z_H = torch.from_numpy(z_H)
        return outputs_of(raw), torch.from_numpy(steps)


def outputs_of(raw: np.ndarray) -> TradingOutputs:
    """``TradingOutputs`` from the kernels' raw head columns (``compiled.HEAD_OUTPUTS``)."""
    raw = torch.from_numpy(raw)
    regimes = slice(REGIME_0, REGIME_0 + len(REGIMES))
    return TradingOutputs(
        tilt_logit=raw[:, TILT_LOGIT],
        up_logit=raw[:, UP_LOGIT],
        log_volatility=raw[:, LOG_VOLATILITY],
        regime_logits=raw[:, regimes],
        q_halt=raw[:, Q_HALT],
        q_continue=raw[:, Q_CONTINUE],
    )
