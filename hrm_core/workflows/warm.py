"""Compile the numba kernels once, into numba's on-disk cache, so that no later process pays for it.

Every kernel is ``cache=True``: the first process to call one compiles it (the feature kernels
take ~10 s, the engine's and the served model's a few more) and the next load it. `make setup`
runs this module after installing, so the test suite's workers and the first `make run` do not
each compile the same kernels at once.

    python -m hrm_core.workflows.warm
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import torch

from hrm_core.core.config import load_config
from hrm_core.data.schema import OHLCV_COLUMNS
from hrm_core.data.synthetic import random_walk_bars
from hrm_core.data.warehouse import ensure_tables
from hrm_core.dataset.scenarios import planted_regime_market
from hrm_core.engine.decisions import run_decisions
from hrm_core.engine.vector_env import VectorTradingEnv
from hrm_core.features.build import build_features
from hrm_core.model.build import build_model_for
from hrm_core.model.serving import ServedModel, save_served

CONFIG = "configs/hrm_smoke.yaml"


def warm(config_path: str = CONFIG) -> dict[str, float]:
    """Call each family of kernels once on a tiny input; returns the seconds each took."""
    config = load_config(config_path)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    bars = random_walk_bars(1, 400, "1D", seed=0)
    bars["ts"] = bars["ts"].dt.tz_localize(None)
    with duckdb.connect() as con:
        ensure_tables(con)
        con.from_df(bars[list(OHLCV_COLUMNS)]).insert_into("clean.ohlcv")
        build_features(con)
    seconds["features"] = time.perf_counter() - start

    start = time.perf_counter()
    engine_bars = bars[["open", "high", "low", "close"]].assign(atr=1.0)
    decisions = pd.DataFrame(
        {"action": ["BUY_LONG", "HOLD"] * 200, "quantity": 0.5, "stop_loss": 1.0, "take_profit": 2.0}
    )
    run_decisions(engine_bars, decisions, config.trading)
    env = VectorTradingEnv(planted_regime_market(500), config, n_envs=4)
    env.reset()
    env.step(np.zeros(4, np.int64), np.ones(4), np.zeros(4), np.zeros(4))
    seconds["engine"] = time.perf_counter() - start

    start = time.perf_counter()
    hf = config.hierarchical_features
    names = (("s0", "s1"), ("t0", "t1"))
    rng = np.random.default_rng(0)
    strategic = rng.normal(size=(2, hf.high_level_lookback, 2)).astype(np.float32)
    tactical = rng.normal(size=(2, hf.low_level_lookback, 2)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="hrm-warm-") as folder:  # the served files, as registered
        served = ServedModel.load(*save_served(Path(folder), build_model_for(config, *names), config))
    served.heads(strategic, tactical)
    seconds["served model"] = time.perf_counter() - start
    return seconds


def main() -> None:
    torch.set_num_threads(1)
    for family, took in warm().items():
        print(f"numba kernels compiled and cached: {family} ({took:.1f} s)")


if __name__ == "__main__":
    main()
