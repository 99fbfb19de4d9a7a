"""``VectorTradingEnv``: N episodes stepped together as arrays, for RL.

The same execution engine as ``TradingEnv`` (``run_bar`` / ``decide``), looped over the N episodes
inside one numba kernel, so the semantics are identical by construction (a test checks it step
for step). Observations are the episodes' current data rows and account states; feature windows
are gathered on demand (``windows``), since most RL code batches them on its own device anyway.
An episode lasts ``episode_bars`` decisions from a random start inside the part (or ends at the
part's end) and restarts automatically; ``done`` marks the step that ended it.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numpy.lib import recfunctions

from hrm_core.core.config import HRMConfig
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.dataset.market import MarketData
from hrm_core.engine.decisions import (
    ACCOUNT_DT,
    MAX_CLOSED_PER_BAR,
    TRADE_DT,
    account_params,
    decide,
    new_accounts,
    run_bar,
)
from hrm_core.engine.env import observe_accounts

ArrayLike = np.ndarray | torch.Tensor


@numba.njit(cache=True)
def _step_all(
    states,
    params,
    rows,
    last_rows,
    open_,
    high,
    low,
    close,
    atr,
    action,
    quantity,
    stop_atr,
    target_atr,
    rewards,
    done,
    trade,
):
    for i in range(states.shape[0]):
        t = rows[i]
        account = states[i]
        before = account.cash + account.shares * close[t]
        decide(account, params, close[t], atr[t], action[i], quantity[i], stop_atr[i], target_atr[i])
        nxt = t + 1
        run_bar(account, params, nxt, open_[nxt], high[nxt], low[nxt], close[nxt], trade, 0)
        after = account.cash + account.shares * close[nxt]
        rewards[i] = after / before - 1
        rows[i] = nxt
        done[i] = nxt >= last_rows[i] or after <= 0


class VectorTradingEnv:
    def __init__(
        self,
        data: MarketData,
        config: HRMConfig,
        n_envs: int,
        part: str = "train",
        episode_bars: int = 256,
        seed: int = 0,
        allowed_starts: np.ndarray | None = None,
    ) -> None:
        self.data, self.config, self.n_envs, self.episode_bars = data, config, n_envs, episode_bars
        hf = config.hierarchical_features
        self.high, self.low = hf.high_level_lookback, hf.low_level_lookback
        decision = data.decision_rows(part, self.high)
        if len(decision) < 2:
            raise ValueError(
                f"VectorTradingEnv: part {part!r} has {len(decision)} decision rows; need 2 or more"
            )
        run_end = decision.copy()  # the last row of each contiguous run of decisions (a symbol's part)
        for k in range(len(decision) - 2, -1, -1):
            if decision[k + 1] == decision[k] + 1:
                run_end[k] = run_end[k + 1]
        self.starts = decision[decision < run_end]
        if allowed_starts is not None:  # e.g. only bars tagged with one task
            self.starts = np.intersect1d(self.starts, allowed_starts)
            if not len(self.starts):
                raise ValueError(f"VectorTradingEnv: no allowed start row lies in part {part!r}")
        self.run_end = dict(zip(decision.tolist(), run_end.tolist(), strict=True))
        self.params = account_params(config.trading)
        self.rng = np.random.default_rng(seed)
        self.arrays = tuple(
            np.ascontiguousarray(getattr(data, k), dtype=float) for k in ("open", "high", "low", "close")
        )
        self.atr = np.nan_to_num(data.atr)
        self.states = new_accounts(n_envs, config.trading.initial_capital)  # ACCOUNT_DT records
        self.scratch_trade = np.zeros(MAX_CLOSED_PER_BAR, dtype=TRADE_DT)  # closed trades are not kept here
        self.rows = np.zeros(n_envs, dtype=np.int64)
        self.last_rows = np.zeros(n_envs, dtype=np.int64)

    def state_dict(self) -> dict:
        """Accounts (as a float array, one column per ``ACCOUNT_DT`` field), rows and the start
        generator: what an exact resume restores."""
        return {
            "states": recfunctions.structured_to_unstructured(self.states, dtype=np.float64),
            "rows": self.rows.copy(),
            "last_rows": self.last_rows.copy(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        states = np.asarray(state["states"])
        self.states[:] = recfunctions.unstructured_to_structured(states, dtype=ACCOUNT_DT)
        self.rows[:], self.last_rows[:] = state["rows"], state["last_rows"]
        self.rng.bit_generator.state = state["rng"]

    def reset(self, start_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Start every episode (at random decision rows, or at ``start_rows``)."""
        self.start_episodes(np.arange(self.n_envs), start_rows)
        return self.observation()

    def step(
        self, action: ArrayLike, quantity: ArrayLike, stop_loss: ArrayLike, take_profit: ArrayLike
    ) -> tuple[dict[str, ArrayLike], ArrayLike, ArrayLike]:
        """One decision per episode; returns observations, rewards (simple returns) and done flags.
        Finished episodes restart at a random row before the observations are returned. Actions
        given as torch tensors give torch tensors back, on their device; numpy gives numpy."""
        device = action.device if isinstance(action, torch.Tensor) else None
        action, quantity, stop_loss, take_profit = (
            np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=dtype)
            for x, dtype in ((action, np.int64), (quantity, float), (stop_loss, float), (take_profit, float))
        )
        self._check(action, quantity, stop_loss, take_profit)
        rewards = np.empty(self.n_envs)
        done = np.zeros(self.n_envs, dtype=np.bool_)
        _step_all(
            self.states,
            self.params,
            self.rows,
            self.last_rows,
            *self.arrays,
            self.atr,
            action,
            quantity,
            stop_loss,
            take_profit,
            rewards,
            done,
            self.scratch_trade,
        )
        if done.any():
            self.start_episodes(np.flatnonzero(done), None)
        observation = self.observation()
        if device is None:
            return observation, rewards, done
        to_torch = lambda x: torch.as_tensor(x, device=device)  # noqa: E731
        return {k: to_torch(v) for k, v in observation.items()}, to_torch(rewards), to_torch(done)

    def _check(self, action, quantity, stop_loss, take_profit) -> None:
        """Refuse actions no policy should output, naming the first bad episode and its row."""
        rules = [
            ((action < 0) | (action >= len(ACTIONS)), f"action must be 0..{len(ACTIONS) - 1}"),
            (~np.isfinite(quantity) | (quantity < 0), "quantity must be finite and ≥ 0"),
            (
                ~np.isfinite(stop_loss) | (stop_loss < 0),
                "stop_loss must be a finite ATR multiple ≥ 0 (0: none)",
            ),
            (
                ~np.isfinite(take_profit) | (take_profit < 0),
                "take_profit must be a finite ATR multiple ≥ 0 (0: none)",
            ),
        ]
        for bad, rule in rules:
            hits = np.flatnonzero(bad)
            if len(hits):
                env = hits[0]
                raise ValueError(f"VectorTradingEnv: episode {env} at row {self.rows[env]}: {rule}")

    def observation(self) -> dict[str, np.ndarray]:
        t, s = self.rows, self.states
        close = self.data.close[t]
        account = observe_accounts(s, close, self.atr[t], self.config.trading.initial_capital)
        return {"rows": t.copy(), "account": account, "equity": s["cash"] + s["shares"] * close}

    def windows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Strategic [N, high, Fs] and tactical [N, low, Ft] feature windows ending at ``rows``."""
        return self.data.windows(rows, self.high, self.low)

    def start_episodes(self, envs: np.ndarray, start_rows: np.ndarray | None) -> None:
        rows = self.rng.choice(self.starts, size=len(envs)) if start_rows is None else np.asarray(start_rows)
        for env, row in zip(envs, rows, strict=True):
            self.states[env] = new_accounts(1, self.config.trading.initial_capital)[0]
            self.rows[env] = row
            self.last_rows[env] = min(self.run_end[int(row)], row + self.episode_bars)
