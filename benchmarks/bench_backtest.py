"""Order simulation speed: ``simulate_orders`` beside vectorbt's ``Portfolio.from_orders`` on the same
1 M bars and random order stream (both numba; first calls, which compile, are excluded).

    python benchmarks/bench_backtest.py [--bars 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import vectorbt as vbt

from hrm_core import simulate_orders


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
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.bars
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    frame = pd.DataFrame({"open": close * np.exp(rng.normal(0, 0.0005, n)), "close": close})
    orders = np.where(rng.random(n) < 0.1, rng.choice([-1.0, 1.0], n) * rng.uniform(1, 10, n), np.nan)
    shifted = pd.Series(orders).shift(1)

    def ours():
        simulate_orders(frame, orders, init_cash=1e9, fees=0.001, fixed_fees=0.1, slippage=0.0005)

    def theirs():
        pf = vbt.Portfolio.from_orders(
            frame["close"],
            shifted,
            price=frame["open"],
            fees=0.001,
            fixed_fees=0.1,
            slippage=0.0005,
            init_cash=1e9,
            direction="both",
            freq="1D",
        )
        pf.value()

    print(f"order simulation, {n:,} bars, {int(np.isfinite(orders).sum()):,} orders, best of {args.repeats}")
    for name, run in (("simulate_orders", ours), ("vectorbt from_orders + value", theirs)):
        seconds = best_of(args.repeats, run)
        print(f"{name:<30} {seconds * 1000:>9.1f} ms {n / seconds:>15,.0f} bars/s")


if __name__ == "__main__":
    main()
