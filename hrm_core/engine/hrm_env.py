"""``HRMTradingEnv``: the seed's environment, in which a step runs the model's segments on the
current bar until the Q head halts (or the budget is spent), turns its target exposure into the
seed's action through the no-trade band (``model/exposure.py``) and executes it through
``TradingEnv``. ``step()`` with no action lets the model decide; ``step(action)`` executes an
outside action instead (the agent still sees every bar)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData
from hrm_core.engine.decisions import exit_levels
from hrm_core.engine.env import TradingEnv
from hrm_core.model.agent import Decision, HRMTradingAgent
from hrm_core.model.exposure import benchmark_exposure, exposure_cap
from hrm_core.model.trader import MarketInputs, TraderBase


class HRMTradingEnv(TradingEnv):
    def __init__(
        self,
        data: MarketData,
        config: HRMConfig,
        model: TraderBase,
        symbol: str | None = None,
        part: str = "test",
        act: bool = True,
        reward: Literal["pnl", "log", "risk_adjusted"] = "pnl",
    ) -> None:
        super().__init__(data, config, symbol=symbol, part=part, reward=reward)
        self.model = model.eval()
        self.agent = HRMTradingAgent(model, config, act)
        self.device = next(model.parameters()).device
        self.stop_atr, self.target_atr = exit_levels(config.trading)
        self.benchmark = benchmark_exposure(data.close, data.symbol_id, config.policy, config.trading)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agent.reset()
        self.held = torch.zeros(1, device=self.device)  # the exposure the last decision asked for
        self.observation, info = super().reset(seed=seed, options=options)
        return self.observation, info

    def step(self, action: dict[str, Any] | None = None) -> tuple[dict, float, bool, bool, dict]:
        """Run the agent on the current bar, then execute its action (or ``action`` when given).
        ``info`` adds the target exposure, the segments used, p_up, the confidence, the predicted
        volatility and the regime probabilities."""
        decision = self.decide()
        out = decision.outputs
        outside = action is not None
        if not outside:
            action = {
                "action_type": int(decision.action_index[0]),
                "quantity": decision.position.abs().cpu().numpy().astype(np.float32),
                "stop_loss": np.array([self.stop_atr], dtype=np.float32),
                "take_profit": np.array([self.target_atr], dtype=np.float32),
            }
            self.held = decision.position
        self.observation, reward, terminated, truncated, info = super().step(action)
        if outside or self.account["shares"] == 0.0:  # an outside action, or a stop or target, moved it
            exposure = self.account["shares"] * self.data.close[self.bar] / max(self.equity, 1e-12)
            self.held = torch.tensor([exposure], device=self.device, dtype=torch.float32)
        info |= {
            "tilt": float(decision.tilt[0]),
            "target": float(decision.target[0]),
            "segments": int(decision.segments[0]),
            "p_up": float(out.p_up[0]),
            "confidence": float(decision.confidence[0]),
            "market_risk": float(out.market_risk[0]),
            "regime_probs": out.regime_probs[0].cpu().numpy(),
        }
        return self.observation, reward, terminated, truncated, info

    def decide(self) -> Decision:
        """The agent's decision for the current bar."""
        obs, t = self.observation, self.bar
        inputs = MarketInputs(
            strategic=torch.as_tensor(obs["strategic"], device=self.device)[None],
            tactical=torch.as_tensor(obs["tactical"], device=self.device)[None],
        )
        price = torch.tensor([self.data.close[t]], device=self.device)
        atr = torch.tensor([np.nan_to_num(self.data.atr[t])], device=self.device)
        cap = exposure_cap(price, atr, self.config.trading).float()
        benchmark = torch.tensor([self.benchmark[t]], device=self.device, dtype=torch.float32)
        return self.agent.decide(inputs, cap, self.held, benchmark)
