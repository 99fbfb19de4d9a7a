"""Feature build benchmark: the warehouse build (DuckDB reads and stores, numba kernels compute)
beside the same features with pandas + TA-Lib and with polars, and an incremental update.

Generated data, ``--symbols`` × ``--bars`` (default 1,000 × 10,000 = 10 M bars), 2 threads each.
Each implementation runs in its own subprocess so that peak memory (sampled RSS) is its own. The
references compute into memory; storing their result in DuckDB, which the warehouse build
includes, is timed separately beside them. The incremental case appends one bar per symbol to
the built warehouse and runs ``update_features``. Targets: faster than both references, ≤ 4 GiB.

    python benchmarks/bench_features.py [--symbols 1000] [--bars 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from memory import PeakRSS

IMPLEMENTATIONS = {"duckdb": "run_duckdb", "reference": "run_reference", "polars": "run_polars"}


def generated_bars(symbols: int, bars: int):
    from hrm_core.data.synthetic import random_walk_bars

    frame = random_walk_bars(symbols, bars, "1D", seed=0)
    frame["ts"] = frame["ts"].dt.tz_localize(None)
    return frame


def connect(folder: str):
    """The benchmark's warehouse: 2 threads, DuckDB's buffer memory limited to 3 GB."""
    import duckdb

    con = duckdb.connect(str(Path(folder) / "bench.duckdb"))
    con.execute("SET threads = 2")
    con.execute("SET memory_limit = '3GB'")
    con.execute(f"SET temp_directory = '{folder}/spill'")
    return con


def prepare(folder: str, symbols: int, bars: int, keep: int | None = None) -> None:
    """Write ``clean.ohlcv`` of generated bars to a warehouse file (in a process of its own, so
    that the build's memory is measured from a fresh start); ``keep``: that many symbols only."""
    from hrm_core.data.warehouse import ensure_tables

    frame = generated_bars(symbols, bars)
    if keep is not None:
        frame = frame[frame["symbol"].isin(sorted(frame["symbol"].unique())[:keep])]
    Path(folder).mkdir(parents=True, exist_ok=True)
    con = connect(folder)
    ensure_tables(con)
    con.register("generated", frame)
    con.execute("INSERT INTO clean.ohlcv SELECT * FROM generated")
    con.execute("CHECKPOINT")
    con.close()


def run_duckdb(symbols: int, bars: int) -> dict:
    """The full build, then an incremental update with one new bar per symbol."""
    from multiprocessing import get_context

    from hrm_core.core.feature_registry import FEATURES
    from hrm_core.features.build import build_features, update_features

    with tempfile.TemporaryDirectory() as tmp:
        spawn = get_context("spawn")
        for folder, keep in ((tmp + "/warm", 1), (tmp, None)):
            writer = spawn.Process(target=prepare, args=(folder, symbols, bars, keep))
            writer.start()
            writer.join()
        small = connect(tmp + "/warm")
        start = time.perf_counter()
        build_features(small)  # loads the cached kernels (compiles them on the very first run)
        warm_up = time.perf_counter() - start
        small.close()
        con = connect(tmp)
        before = psutil.Process().memory_info().rss
        with PeakRSS() as memory:
            start = time.perf_counter()
            rows = build_features(con)
            con.execute("CHECKPOINT")
            seconds = time.perf_counter() - start
        con.execute(  # one new bar, the next day's, for every symbol
            "INSERT INTO clean.ohlcv SELECT symbol, ts + INTERVAL 1 DAY, open, high, low, close * 1.001, "
            "volume FROM clean.ohlcv QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) = 1"
        )
        start = time.perf_counter()
        update = update_features(con)
        con.execute("CHECKPOINT")
        incremental = time.perf_counter() - start
        con.close()
    return {
        "impl": "duckdb+numba",
        "rows": rows,
        "features": len(FEATURES),
        "seconds": seconds,
        "peak_rss": memory.peak,
        "warm_up": warm_up,
        "rss_before": before,
        "incremental_seconds": incremental,
        "incremental_rows": update.appended,
        "incremental_rebuilt": len(update.rebuilt),
    }


def store_seconds(features) -> float:
    """Seconds to store a reference's feature table in a DuckDB file (what the build includes)."""
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "store.duckdb"))
        con.execute("SET threads = 2")
        start = time.perf_counter()
        con.register("computed", features)
        con.execute("CREATE TABLE features AS SELECT * FROM computed")
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - start
        con.close()
    return seconds


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

    frame = generated_bars(symbols, bars)
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
        "store_seconds": store_seconds(table),
    }


def polars_features(frame):
    """The same feature set with polars expressions over symbols. polars' EMAs are not seeded
    with TA-Lib's first mean, so the warm-up values differ; the work is the same."""
    import polars as pl

    c, h, lo, o, v = (pl.col(k) for k in ("close", "high", "low", "open", "volume"))

    def per(e):
        return e.over("symbol")

    def ema(e, span):
        return per(e.ewm_mean(span=span, adjust=False))

    def wilder(e, period):
        return per(e.ewm_mean(alpha=1 / period, adjust=False))

    prev = per(c.shift(1))
    log_ret = (c / prev).log()
    n = per(pl.int_range(pl.len())).cast(pl.Float64)
    sma = {p: per(c.rolling_mean(p)) for p in (20, 50, 100, 200)}
    sd_20, sd_100 = per(c.rolling_std(20, ddof=0)), per(c.rolling_std(100, ddof=0))
    macd = ema(c, 12) - ema(c, 26)
    signal = per(macd.ewm_mean(span=9, adjust=False))
    gain, loss = (c - prev).clip(lower_bound=0), (prev - c).clip(lower_bound=0)
    rsi = 100 * wilder(gain, 14) / (wilder(gain, 14) + wilder(loss, 14))
    true_range = pl.max_horizontal(h - lo, (h - prev).abs(), (lo - prev).abs())
    width = 4 * sd_20 / sma[20]
    corr = per(pl.rolling_corr(c.log(), n, window_size=50))
    strength = (corr * corr.abs()).fill_nan(0)
    vol_20, vol_100 = per(log_ret.rolling_std(20)), per(log_ret.rolling_std(100))
    log_volume = (1 + v).log()
    ts = pl.col("ts").dt
    features = [
        *(sma[p].alias(f"h_sma_{p}") for p in (50, 100, 200)),
        *((c / sma[p] - 1).alias(f"h_sma_{p}_ratio") for p in (50, 100, 200)),
        (sma[50] / sma[200] - 1).alias("h_sma_50_200_spread"),
        strength.alias("h_trend_strength_50"),
        (c / per(c.shift(100))).log().alias("h_ret_100"),
        ((c - sma[100]) / sd_100).alias("h_zscore_100"),
        ema(c, 12).alias("l_ema_12"),
        ema(c, 26).alias("l_ema_26"),
        macd.alias("l_macd"),
        signal.alias("l_macd_signal"),
        (macd - signal).alias("l_macd_hist"),
        rsi.alias("l_rsi_14"),
        (c - per(c.shift(5))).alias("l_mom_5"),
        (c / ema(c, 12) - 1).alias("l_ema_12_ratio"),
        (macd / c).alias("l_macd_norm"),
        (signal / c).alias("l_macd_signal_norm"),
        ((macd - signal) / c).alias("l_macd_hist_norm"),
        (rsi / 50 - 1).alias("l_rsi_14_norm"),
        (c / per(c.shift(5)) - 1).alias("l_mom_5_pct"),
        *((c / per(c.shift(k))).log().alias(f"s_ret_{k}") for k in (1, 5, 10, 20)),
        wilder(true_range, 20).alias("h_atr_20"),
        (wilder(true_range, 20) / c).alias("h_atr_20_pct"),
        (sma[20] + 2 * sd_20).alias("l_bbands_upper_20"),
        sma[20].alias("l_bbands_middle_20"),
        (sma[20] - 2 * sd_20).alias("l_bbands_lower_20"),
        ((c - sma[20] + 2 * sd_20) / (4 * sd_20)).alias("l_bb_pctb_20"),
        width.alias("l_bb_width_20"),
        (width <= 1.1 * per(width.rolling_min(100))).cast(pl.Float64).alias("l_bb_squeeze"),
        vol_20.alias("l_vol_20"),
        vol_100.alias("h_vol_100"),
        (c / per(c.rolling_max(200)) - 1).alias("h_drawdown_200"),
        ((h - lo) / c).alias("l_range"),
        ((c - o) / o).alias("l_body"),
        (o / prev - 1).alias("l_gap"),
        ((log_volume - per(log_volume.rolling_mean(20))) / per(log_volume.rolling_std(20))).alias(
            "l_volume_z_20"
        ),
        (v / per(v.rolling_mean(20))).alias("l_volume_ratio_20"),
        *(
            f(2 * np.pi * x / period).alias(f"s_{name}_{f.__name__}")
            for name, x, period in (
                ("dow", ts.weekday(), 7),
                ("month", ts.month() - 1, 12),
                ("time_of_day", ts.hour() * 60 + ts.minute(), 1440),
            )
            for f in (pl.Expr.sin, pl.Expr.cos)
        ),
        (vol_20 / vol_100).alias("h_vol_ratio_20_100"),
        pl.when(vol_20 / vol_100 > 1.5)
        .then(2)
        .when(strength.abs() >= 0.5)
        .then(1)
        .otherwise(0)
        .alias("h_regime"),
    ]
    return frame.sort("symbol", "ts").select("symbol", "ts", *features)


def run_polars(symbols: int, bars: int) -> dict:
    import polars as pl

    frame = pl.from_pandas(generated_bars(symbols, bars))
    with PeakRSS() as memory:
        start = time.perf_counter()
        table = polars_features(frame)
        seconds = time.perf_counter() - start
    return {
        "impl": "polars",
        "rows": table.height,
        "features": table.width - 2,
        "seconds": seconds,
        "peak_rss": memory.peak,
        "store_seconds": store_seconds(table),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--bars", type=int, default=10000)
    parser.add_argument("--impl", choices=sorted(IMPLEMENTATIONS))
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(globals()[IMPLEMENTATIONS[args.impl]](args.symbols, args.bars)))
        return
    print(
        f"feature build, {args.symbols} symbols × {args.bars} bars "
        f"({args.symbols * args.bars:,} bars), 2 threads"
    )
    header = f"{'implementation':<14} {'features':>8} {'seconds':>9} {'+ store':>9} {'rows/s':>12}"
    print(f"{header} {'peak RSS':>10}")
    threads = {"OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2", "POLARS_MAX_THREADS": "2"}
    results = []
    for impl in ("duckdb", "reference", "polars"):
        command = [
            sys.executable,
            __file__,
            "--impl",
            impl,
            "--symbols",
            str(args.symbols),
            "--bars",
            str(args.bars),
        ]
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, env={**os.environ, **threads}
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        store = r.get("store_seconds")
        total = r["seconds"] + (store or 0.0)
        print(
            f"{r['impl']:<14} {r['features']:>8} {r['seconds']:>9.1f} "
            f"{(f'{total:.1f}' if store is not None else '(incl.)'):>9} {r['rows'] / total:>12,.0f} "
            f"{r['peak_rss'] / 2**30:>8.2f} GiB"
        )
    build = results[0]
    print(
        f"incremental update, one new bar for each of {args.symbols} symbols: "
        f"{build['incremental_seconds']:.2f} s ({build['incremental_rows']} rows computed, "
        f"{build['incremental_rebuilt']} symbols rebuilt); kernels loaded in {build['warm_up']:.1f} s"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
