"""Feature build benchmark: the DuckDB SQL build beside a pandas + TA-Lib reference build.

Generated data, ``--symbols`` × ``--bars`` (default 1,000 × 10,000 = 10 M bars). Each build runs
in its own subprocess so that peak memory (sampled RSS during the build) is its own. Target for the
DuckDB build: the whole feature set in ≤ 60 s on 2 cores with ≤ 4 GiB peak.

    python benchmarks/bench_features.py [--symbols 1000] [--bars 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory import PeakRSS


def run_duckdb(symbols: int, bars: int) -> dict:
    import duckdb

    from hrm_core.data.synthetic import random_walk_bars
    from hrm_core.data.warehouse import ensure_tables
    from hrm_core.features.build import build_features
    from hrm_core.features.registry import FEATURES

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        con.execute("SET threads = 2")
        con.execute("SET memory_limit = '3GB'")
        con.execute(f"SET temp_directory = '{tmp}/spill'")
        ensure_tables(con)
        frame = random_walk_bars(symbols, bars, "1D", seed=0)
        frame["ts"] = frame["ts"].dt.tz_localize(None)
        con.register("generated", frame)
        con.execute("INSERT INTO clean.ohlcv SELECT * FROM generated")
        con.unregister("generated")
        con.execute("CHECKPOINT")
        del frame
        with PeakRSS() as memory:
            start = time.perf_counter()
            rows = build_features(con)
            seconds = time.perf_counter() - start
        con.close()
    return {
        "impl": "duckdb",
        "rows": rows,
        "features": len(FEATURES),
        "seconds": seconds,
        "peak_rss": memory.peak,
    }


def reference_features(g):
    """The same feature set for one symbol with pandas rolling windows and TA-Lib."""
    import numpy as np
    import pandas as pd
    import talib

    c, h, lo, o, v = (g[k].to_numpy(dtype=float) for k in ("close", "high", "low", "open", "volume"))
    close = pd.Series(c)
    log_ret = np.log(close).diff()
    out = {}
    for p in (50, 100, 200):
        out[f"h_sma_{p}"] = talib.SMA(c, p)
        out[f"h_sma_{p}_ratio"] = c / out[f"h_sma_{p}"] - 1
    out["h_sma_50_200_spread"] = out["h_sma_50"] / out["h_sma_200"] - 1
    n = pd.Series(np.arange(len(c)), dtype=float)
    lc = np.log(close)
    cov = lc.rolling(50).cov(n)
    r2 = cov**2 / (lc.rolling(50).var() * n.rolling(50).var())
    out["h_trend_strength_50"] = np.sign(cov) * r2.fillna(0)
    out["h_ret_100"] = np.log(close / close.shift(100))
    out["h_zscore_100"] = (close - close.rolling(100).mean()) / close.rolling(100).std(ddof=0)
    out["l_ema_12"], out["l_ema_26"] = talib.EMA(c, 12), talib.EMA(c, 26)
    out["l_macd"], out["l_macd_signal"], out["l_macd_hist"] = talib.MACD(c, 12, 26, 9)
    out["l_rsi_14"], out["l_mom_5"] = talib.RSI(c, 14), talib.MOM(c, 5)
    out["l_ema_12_ratio"] = c / out["l_ema_12"] - 1
    for k in ("macd", "macd_signal", "macd_hist"):
        out[f"l_{k}_norm"] = out[f"l_{k}"] / c
    out["l_rsi_14_norm"] = out["l_rsi_14"] / 50 - 1
    out["l_mom_5_pct"] = close / close.shift(5) - 1
    for k in (1, 5, 10, 20):
        out[f"s_ret_{k}"] = np.log(close / close.shift(k))
    out["h_atr_20"] = talib.ATR(h, lo, c, 20)
    out["h_atr_20_pct"] = out["h_atr_20"] / c
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2)
    out["l_bbands_upper_20"], out["l_bbands_middle_20"], out["l_bbands_lower_20"] = upper, middle, lower
    out["l_bb_pctb_20"] = (c - lower) / (upper - lower)
    width = pd.Series((upper - lower) / middle)
    out["l_bb_width_20"] = width
    out["l_bb_squeeze"] = (width <= 1.1 * width.rolling(100).min()).astype(float)
    out["l_vol_20"], out["h_vol_100"] = log_ret.rolling(20).std(), log_ret.rolling(100).std()
    out["h_drawdown_200"] = close / close.rolling(200).max() - 1
    out["l_range"], out["l_body"] = (h - lo) / c, (c - o) / o
    out["l_gap"] = o / close.shift(1) - 1
    lv = pd.Series(np.log1p(v))
    out["l_volume_z_20"] = (lv - lv.rolling(20).mean()) / lv.rolling(20).std()
    out["l_volume_ratio_20"] = v / pd.Series(v).rolling(20).mean()
    ts = g["ts"].dt
    for name, x, period in (
        ("dow", ts.dayofweek + 1, 7),
        ("month", ts.month - 1, 12),
        ("time_of_day", ts.hour * 60 + ts.minute, 1440),
    ):
        out[f"s_{name}_sin"] = np.sin(2 * np.pi * x.to_numpy() / period)
        out[f"s_{name}_cos"] = np.cos(2 * np.pi * x.to_numpy() / period)
    ratio = out["l_vol_20"] / out["h_vol_100"]
    out["h_vol_ratio_20_100"] = ratio
    out["h_regime"] = np.where(ratio > 1.5, 2, np.where(np.abs(out["h_trend_strength_50"]) >= 0.5, 1, 0))
    return pd.DataFrame({k: np.asarray(val, dtype=float) for k, val in out.items()})


def run_reference(symbols: int, bars: int) -> dict:
    import pandas as pd

    from hrm_core.data.synthetic import random_walk_bars

    frame = random_walk_bars(symbols, bars, "1D", seed=0)
    with PeakRSS() as memory:
        start = time.perf_counter()
        parts = [reference_features(g.reset_index(drop=True)) for _, g in frame.groupby("symbol", sort=True)]
        table = pd.concat(parts, ignore_index=True)
        seconds = time.perf_counter() - start
    return {
        "impl": "pandas+talib",
        "rows": len(table),
        "features": table.shape[1],
        "seconds": seconds,
        "peak_rss": memory.peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=10000)
    parser.add_argument("--impl", choices=["duckdb", "reference"])
    args = parser.parse_args()
    if args.impl:
        run = run_duckdb if args.impl == "duckdb" else run_reference
        print(json.dumps(run(args.symbols, args.bars)))
        return
    print(
        f"feature build, {args.symbols} symbols × {args.bars} bars "
        f"({args.symbols * args.bars:,} bars), 2 threads"
    )
    print(f"{'implementation':<14} {'features':>8} {'seconds':>9} {'rows/s':>12} {'peak RSS':>10}")
    for impl in ("duckdb", "reference"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--impl",
                impl,
                "--symbols",
                str(args.symbols),
                "--bars",
                str(args.bars),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={"OMP_NUM_THREADS": "2", **dict(__import__("os").environ)},
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['impl']:<14} {r['features']:>8} {r['seconds']:>9.1f} {r['rows'] / r['seconds']:>12,.0f} "
            f"{r['peak_rss'] / 2**30:>8.2f} GiB"
        )


if __name__ == "__main__":
    main()
