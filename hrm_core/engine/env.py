"""``TradingEnv``: one symbol's bars as a gymnasium environment, on the shared execution engine.

Observation (a dict): the strategic and tactical feature windows ending at the current bar and the
7-number account state (``account.py``). Action (a dict): ``action_type`` (BUY_LONG, SELL_SHORT,
CLOSE_LONG, CLOSE_SHORT, HOLD), ``quantity`` (fraction of equity), ``stop_loss`` and
``take_profit`` (ATR multiples, 0 = none), with the engine's semantics (``decisions.py``). A step
takes the decision at the current bar's close; the next bar then runs (fill at its open, stops
and targets intrabar) and the reward is the change in equity: ``reward="pnl"`` the simple
return, ``"log"`` the log return, ``"risk_adjusted"`` the return minus ``risk_penalty`` × its
square. An episode walks the decision rows of one symbol in one fold part.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from gymnasium import spaces

from hrm_core.core.config import HRMConfig
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.dataset.market import FEATURE_CLIP, MarketData
from hrm_core.engine.decisions import (
    MAX_CLOSED_PER_BAR,
    TRADE_DT,
    account_params,
    decide,
    mark_open_trade,
    new_accounts,
    run_bar,
)
from hrm_core.model.account import ACCOUNT_FEATURES, account_state

MAX_ATR_MULTIPLE = 20.0


class TradingEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(
        self,
        data: MarketData,
        config: HRMConfig,
        symbol: str | None = None,
        part: str = "test",
        reward: Literal["pnl", "log", "risk_adjusted"] = "pnl",
        risk_penalty: float = 1.0,
    ) -> None:
        hf = config.hierarchical_features
        self.data, self.config, self.reward_kind, self.risk_penalty = data, config, reward, risk_penalty
        self.high, self.low = hf.high_level_lookback, hf.low_level_lookback
        symbol_id = data.symbols.index(symbol) if symbol is not None else 0
        rows = data.decision_rows(part, self.high)
        self.rows = rows[data.symbol_id[rows] == symbol_id]
        if len(self.rows) < 2:
            raise ValueError(
                f"TradingEnv: symbol {data.symbols[symbol_id]!r} has {len(self.rows)} decision rows in "
                f"part {part!r}; an episode needs at least 2"
            )
        self.params = account_params(config.trading)
        self.observation_space = spaces.Dict(
            {
                "strategic": spaces.Box(
                    -FEATURE_CLIP, FEATURE_CLIP, (self.high, data.strategic.shape[1]), np.float32
                ),
                "tactical": spaces.Box(
                    -FEATURE_CLIP, FEATURE_CLIP, (self.low, data.tactical.shape[1]), np.float32
                ),
                "account": spaces.Box(-np.inf, np.inf, (len(ACCOUNT_FEATURES),), np.float32),
            }
        )
        self.action_space = spaces.Dict(
            {
                "action_type": spaces.Discrete(len(ACTIONS)),
                "quantity": spaces.Box(0.0, config.trading.max_position_size, (1,), np.float32),
                "stop_loss": spaces.Box(0.0, MAX_ATR_MULTIPLE, (1,), np.float32),
                "take_profit": spaces.Box(0.0, MAX_ATR_MULTIPLE, (1,), np.float32),
            }
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.step_index = 0
        self.accounts = new_accounts(1, self.config.trading.initial_capital)
        self.account = self.accounts[0]  # a view: the engine updates it in place
        self.trade = np.zeros(MAX_CLOSED_PER_BAR, dtype=TRADE_DT)
        return self._observation(), self._info()

    def step(self, action: dict[str, Any]) -> tuple[dict, float, bool, bool, dict]:
        t = self.rows[self.step_index]
        d = self.data
        before = self.equity
        kind, quantity, stop, target = self._checked(action, t)
        decide(self.account, self.params, d.close[t], d.atr[t], kind, quantity, stop, target)
        nxt = t + 1
        closed = run_bar(
            self.account, self.params, nxt, d.open[nxt], d.high[nxt], d.low[nxt], d.close[nxt], self.trade, 0
        )
        self.step_index += 1
        change = self.equity / before - 1
        reward = {
            "pnl": change,
            "log": float(np.log1p(change)),
            "risk_adjusted": change - self.risk_penalty * change**2,
        }[self.reward_kind]
        terminated = self.step_index >= len(self.rows) - 1 or self.equity <= 0
        info = self._info() | ({"closed_trade": self.trade[:closed].copy()} if closed else {})
        return self._observation(), float(reward), bool(terminated), False, info

    def _checked(self, action: dict[str, Any], t: int) -> tuple[int, float, float, float]:
        """The action's four numbers, or a ValueError naming the bar and the broken rule."""
        kind = int(action["action_type"])
        quantity, stop, target = (
            float(np.asarray(action[k], dtype=float).reshape(-1)[0])
            for k in ("quantity", "stop_loss", "take_profit")
        )
        rules = [
            (0 <= kind < len(ACTIONS), f"action_type must be 0..{len(ACTIONS) - 1}, got {kind}"),
            (np.isfinite(quantity) and quantity >= 0, f"quantity must be finite and ≥ 0, got {quantity}"),
            (
                np.isfinite(stop) and 0 <= stop <= MAX_ATR_MULTIPLE,
                f"stop_loss must be in [0, {MAX_ATR_MULTIPLE}] ATRs (0: none), got {stop}",
            ),
            (
                np.isfinite(target) and 0 <= target <= MAX_ATR_MULTIPLE,
                f"take_profit must be in [0, {MAX_ATR_MULTIPLE}] ATRs (0: none), got {target}",
            ),
        ]
        for ok, rule in rules:
            if not ok:
                symbol = self.data.symbols[self.data.symbol_id[t]]
                raise ValueError(
                    f"TradingEnv: {symbol} bar {pd.Timestamp(self.data.ts[t])} (row {t}): {rule}"
                )
        return kind, quantity, stop, target

    @property
    def bar(self) -> int:
        """Data row of the current bar (the next decision's)."""
        return int(self.rows[min(self.step_index, len(self.rows) - 1)])

    @property
    def equity(self) -> float:
        return float(self.account["cash"] + self.account["shares"] * self.data.close[self.bar])

    @property
    def costs(self) -> float:
        """Fees, slippage and borrow paid so far in the episode."""
        return float(self.account["costs"])

    def open_trade(self) -> np.ndarray | None:
        """The position still open, as a ``TRADE_DT`` record marked at the current close (exit
        reason "end", as in ``closed_trade``), or None when flat."""
        trade = np.zeros(1, dtype=TRADE_DT)
        marked = mark_open_trade(self.account, trade[0], self.bar, self.data.close[self.bar])
        return trade if marked else None

    def _observation(self) -> dict[str, np.ndarray]:
        t, d = self.bar, self.data
        trading = self.config.trading
        account = observe_accounts(
            self.accounts, d.close[t : t + 1], d.atr[t : t + 1], trading.initial_capital
        )
        return {
            "strategic": d.strategic[t - self.high + 1 : t + 1].copy(),
            "tactical": d.tactical[t - self.low + 1 : t + 1].copy(),
            "account": account[0],
        }

    def _info(self) -> dict[str, Any]:
        return {"bar": self.bar, "equity": self.equity, "shares": float(self.account["shares"])}


def observe_accounts(
    states: np.ndarray, close: np.ndarray, atr: np.ndarray, initial_capital: float
) -> np.ndarray:
    """[N, 7] account features (``account.py``) of N ``ACCOUNT_DT`` records at their bars' closes."""
    equity = states["cash"] + states["shares"] * close
    tensor = torch.from_numpy
    account = account_state(
        position=tensor(states["shares"] * close / np.maximum(equity, 1e-12)),
        entry_price=tensor(np.ascontiguousarray(states["entry_price"])),
        price=tensor(np.array(close, dtype=float)),
        atr=tensor(np.nan_to_num(np.asarray(atr, dtype=float))),
        stop_price=tensor(np.ascontiguousarray(states["stop"])),
        target_price=tensor(np.ascontiguousarray(states["target"])),
        equity_ratio=tensor(equity / initial_capital),
    )
    return account.numpy().astype(np.float32)
