"""Does the product learn at its defaults? The CPU preset, exactly as ``make run`` trains it (three
stages, ACT, 800/400/200 episodes), on three generated markets, each judged out of sample on its
test part, net of costs:

- planted: a regime-dependent edge that needs H (the regime) and L (the signal); beside it the
  same model with the strategic input zeroed (what H adds) and buy-and-hold (no drift: ~0);
- drift: μ/σ² = 10, so the loss's optimum is the cap (long 1.0) on every bar;
- noise: nothing to learn, the optimum is flat; a model that trades here is fitting noise.

    python benchmarks/bench_learning.py [--config configs/hrm_cpu_small.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from hrm_core.config import load_config
from hrm_core.training.evaluate import annualised_sharpe, rollout
from hrm_core.training.scenarios import planted_regime_market
from hrm_core.training.trainer import Trainer

MARKETS = {
    "planted": lambda: planted_regime_market(10_000, seed=0),
    "drift": lambda: planted_regime_market(6000, seed=4, rho=0.0, drift=0.001),
    "noise": lambda: planted_regime_market(6000, seed=4, rho=0.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/hrm_cpu_small.yaml")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config(args.config, training={"device": "cpu"})
    periods = config.trading.periods_per_year
    cases = [(name, False) for name in MARKETS] + [("planted", True)]
    print(
        f"{'market':<18} {'Sharpe':>7} {'buy&hold':>9} {'exposure':>9} {'mean pos':>9} {'turnover':>9}"
        f" {'s':>5}"
    )
    results = []
    for name, blind in cases:
        market = MARKETS[name]()
        if blind:
            market = dataclasses.replace(market, strategic=np.zeros_like(market.strategic))
        start = time.perf_counter()
        model = Trainer(config, market, progress=False).fit().model
        seconds = time.perf_counter() - start
        traded = rollout(model, market, "test", config, act=True)
        row = {
            "market": name + (" (H blind)" if blind else ""),
            "sharpe": traded.sharpe(periods),
            "buy_and_hold": annualised_sharpe(traded.buy_and_hold, periods),
            "exposure": float(np.abs(traded.positions).mean()),
            "mean_position": float(traded.positions.mean()),
            "turnover": float(np.abs(np.diff(traded.positions)).mean()),
            "seconds": seconds,
        }
        results.append(row)
        print(
            f"{row['market']:<18} {row['sharpe']:>7.2f} {row['buy_and_hold']:>9.2f} {row['exposure']:>9.2f} "
            f"{row['mean_position']:>9.2f} {row['turnover']:>9.3f} {seconds:>5.0f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
