"""``HRMTradingEnv``: the seed's environment, in which a step runs the HRM agent's segments on the
current observation until the Q head halts (or the budget is spent) and then executes the extracted
action through ``TradingEnv``. ``step()`` with no action lets the model decide; ``step(action)``
executes an outside action instead (the agent still sees every bar, so its strategic state stays
in step with the episode)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from hrm_core.config import HRMConfig
from hrm_core.model.agent import Decision, HRMTradingAgent
from hrm_core.model.hrm import HRMTrader, MarketInputs
from hrm_core.sim.decisions import SHARES
from hrm_core.sim.env import TradingEnv
from hrm_core.training.data import MarketData


class HRMTradingEnv(TradingEnv):
    def __init__(
        self,
        data: MarketData,
        config: HRMConfig,
        model: HRMTrader,
        symbol: str | None = None,
        part: str = "test",
        act: bool = True,
        reward: Literal["pnl", "log", "risk_adjusted"] = "pnl",
    ) -> None:
        super().__init__(data, config, symbol=symbol, part=part, reward=reward)
        recurrent = model.config.architecture == "hrm"  # baselines: one pass decides
        act = act and recurrent
        segments = config.model.halt_max_steps if act else config.training.deep_supervision_segments
        segments = segments if recurrent else 1
        self.model = model.eval()
        self.agent = HRMTradingAgent(model, segments, act, config.model.h_update_interval)
        self.device = next(model.parameters()).device

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agent.reset()
        self.observation, info = super().reset(seed=seed, options=options)
        return self.observation, info

    def step(self, action: dict[str, Any] | None = None) -> tuple[dict, float, bool, bool, dict]:
        """Run the agent on the current bar, then execute its action (or ``action`` when given).
        ``info`` adds the segments used, the regime probabilities and the model's risk outputs."""
        decision = self.decide()
        out = decision.outputs
        if action is None:
            action = {
                "action_type": int(decision.action_index[0]),
                "quantity": out.quantity.cpu().numpy().astype(np.float32),
                "stop_loss": out.stop_loss.cpu().numpy().astype(np.float32),
                "take_profit": out.take_profit.cpu().numpy().astype(np.float32),
            }
        self.observation, reward, terminated, truncated, info = super().step(action)
        info |= {
            "segments": int(decision.segments[0]),
            "regime_probs": out.regime_probs[0].cpu().numpy(),
            "confidence": float(out.confidence[0]),
        }
        return self.observation, reward, terminated, truncated, info

    def decide(self) -> Decision:
        """The agent's decision for the current bar."""
        obs = self.observation
        held = float(self.state[SHARES])
        inputs = MarketInputs(
            strategic=torch.as_tensor(obs["strategic"], device=self.device)[None],
            tactical=torch.as_tensor(obs["tactical"], device=self.device)[None],
            account=torch.as_tensor(obs["account"], device=self.device)[None],
            position=torch.sign(torch.tensor([held], device=self.device)),
        )
        return self.agent.decide(inputs)
