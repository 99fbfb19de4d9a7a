"""Simulation speed: the engine every backtest runs (``run_decisions``, called as a user calls it:
action names in a frame, and with integer codes) beside vectorbt's ``Portfolio.from_orders`` +
``value()`` replaying the engine's own fills on the same 1 M bars (both numba; first calls, which
compile, are excluded; best of ``--repeats``), and ``VectorTradingEnv`` env-steps per second at N = 1024
episodes with random actions, alone and as RL sees it (``ExposureEnv``: exposure rules, reward
shaping, and every episode's feature windows gathered each step).

    python benchmarks/bench_backtest.py [--bars 1000000] [--repeats 5] [--envs 1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
import vectorbt as vbt

from hrm_core import load_config, run_decisions
from hrm_core.core.config import TradingConfig
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.engine.vector_env import VectorTradingEnv
from hrm_core.rl.env import ExposureEnv
from hrm_core.workflows.train import prepare_market_data


def best_of(repeats: int, run) -> float:
    run()  # compile / warm caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--envs", type=int, default=1024)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.bars
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = close * np.exp(rng.normal(0, 0.0005, n))
    bars = pd.DataFrame(
        {"open": open_, "high": np.maximum(open_, close), "low": np.minimum(open_, close), "close": close}
    ).assign(atr=0.0)
    codes = rng.choice(len(ACTIONS), n, p=[0.04, 0.04, 0.01, 0.01, 0.9])
    decisions = pd.DataFrame(
        {
            "action": np.asarray(ACTIONS, dtype=object)[codes],  # names, as a user writes them
            "quantity": rng.uniform(0.1, 1.0, n),
            "stop_loss": 0.0,
            "take_profit": 0.0,
        }
    )
    trading = TradingConfig(commission=0.001, fixed_fee=0.1, slippage=0.0005, initial_capital=1e9)
    result = run_decisions(bars, decisions, trading)
    fills = result.position.diff().fillna(result.position.iloc[0]).to_numpy()
    orders = np.where(fills != 0, fills, np.nan)

    by_code = decisions.assign(action=codes)

    def theirs():
        pf = vbt.Portfolio.from_orders(
            bars["close"],
            orders,
            price=bars["open"],
            fees=trading.commission,
            fixed_fees=trading.fixed_fee,
            slippage=trading.slippage,
            init_cash=trading.initial_capital,
            direction="both",
            freq="1D",
        )
        pf.value()

    print(f"engine, {n:,} bars, {int(np.isfinite(orders).sum()):,} fills, best of {args.repeats}")
    runs = {
        "run_decisions, action names": lambda: run_decisions(bars, decisions, trading),
        "run_decisions, action codes": lambda: run_decisions(bars, by_code, trading),
        "vectorbt from_orders + value": theirs,
    }
    seconds = {name: best_of(args.repeats, run) for name, run in runs.items()}
    reference = seconds["vectorbt from_orders + value"]
    for name, took in seconds.items():
        print(
            f"{name:<30} {took * 1000:>9.1f} ms {n / took:>15,.0f} bars/s {reference / took:>6.1f}x vectorbt"
        )
    vector_env_speed(args.envs)


def vector_env_speed(n_envs: int, steps: int = 500) -> None:
    """Env-steps per second of ``VectorTradingEnv`` (step + account observation; no feature windows)."""
    config = load_config("configs/hrm_cpu_small.yaml")
    env = VectorTradingEnv(planted_regime_market(20_000), config, n_envs=n_envs, part="train")
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 5, (steps, n_envs))
    quantity, stops, targets = (rng.uniform(0.1, 2, (steps, n_envs)) for _ in range(3))
    env.step(actions[0], quantity[0], stops[0], targets[0])  # compile
    start = time.perf_counter()
    for k in range(steps):
        env.step(actions[k], quantity[k], stops[k], targets[k])
    seconds = time.perf_counter() - start
    print(f"VectorTradingEnv, N = {n_envs}: {steps * n_envs / seconds:,.0f} env-steps/s")
    data = prepare_market_data(config)
    env = ExposureEnv(data, config, n_envs=n_envs, episode_bars=64, seed=0)
    env.reset()
    signals = torch.rand(steps, n_envs) * 2 - 1

    def rollout() -> None:
        for k in range(steps):
            env.windows(env.rows)  # the observations a policy reads
            env.step(signals[k])

    seconds = best_of(3, rollout)
    print(
        f"ExposureEnv with observations (windows {config.hierarchical_features.high_level_lookback} + "
        f"{config.hierarchical_features.low_level_lookback} bars), N = {n_envs}: "
        f"{steps * n_envs / seconds:,.0f} env-steps/s"
    )


if __name__ == "__main__":
    main()
