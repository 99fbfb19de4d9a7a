"""The production warehouse: Iceberg (pyiceberg's SQL catalog on SQLite, data files in a folder).

- ``ingest``: 1,000 generated symbols x 2,000 bars (0.1 % of bars broken, so that validation
  quarantines some) written by 8 parallel writer processes, 125 symbols each, as the raw_ohlcv
  step pods do; then validation (clean + quarantine) and the feature build, each one process, as
  ``clean_ohlcv`` and ``hierarchical_features`` do. Wall time of each phase, peak RSS of the
  largest process, and rows in = clean + quarantined.
- ``reads``: one symbol's features (100 symbols x 2,000 bars, 10 columns) read after 10, 100 and
  1,000 commits that each rewrite one symbol, then after maintenance (compaction, expiry, orphans).
- ``conflicts``: 20 trials of two processes writing the same symbol from the same snapshot; a
  silent loss is both reporting success while only one's rows are there.
- ``build``: the feature build (``hierarchical_features``) of 300 symbols x 2,000 clean bars, in one
  process, into Iceberg (load, build, commit, as the resource does around the asset) beside the same
  build on the local profile's DuckDB file and on an in-memory DuckDB already holding the bars;
  each warehouse also holds raw and quarantined bars, as after validation. Best of ``--rounds``,
  each round on fresh warehouses, and the ratio of Iceberg to the DuckDB file (target ≤ 1.3).

The Parquet lake this replaced ran the same work in the same run by ``--reference lake`` at commit
8257209, the last with ``hrm_core/data/lake.py``; the README gives both. Here the reads' reference
is the same read after 10 commits.

    python benchmarks/bench_warehouse.py [--only ingest|reads|conflicts|build] [--symbols 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from pyiceberg.expressions import EqualTo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.memory import PeakRSS  # noqa: E402
from hrm_core.data.iceberg import ConflictError, Iceberg, create_table  # noqa: E402
from hrm_core.data.warehouse import ensure_tables, replace_symbols, transaction  # noqa: E402

WRITERS = 8
BARS = 2_000


class Store:
    """The warehouse under test: load a connection, commit what changed (what the resource does)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _backend(self) -> Iceberg:
        uri = f"sqlite:///{self.root}/catalog.db"
        return Iceberg({"type": "sql", "uri": uri, "warehouse": (self.root / "data").as_uri()})

    def open(
        self, reads: list[str] | None = None, writes: tuple[str, ...] = ()
    ) -> tuple[duckdb.DuckDBPyConnection, object]:
        con = duckdb.connect()
        return con, self._backend().load_into(con, reads, writes)

    def commit(self, con: duckdb.DuckDBPyConnection, loaded: object, run_id: str) -> None:
        self._backend().commit(con, loaded, run_id)


def generated_bars(symbols: list[str], seed: int) -> pd.DataFrame:
    """Random-walk daily bars; one bar in a thousand has its low above its high."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol in symbols:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, BARS)))
        spread = np.abs(rng.normal(0, 0.005, BARS)) * close
        low = close - spread
        broken = rng.random(BARS) < 0.001
        low[broken] = close[broken] + 2 * spread[broken] + 1
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": pd.date_range("2010-01-01", periods=BARS, freq="D"),
                    "open": close,
                    "high": close + spread,
                    "low": low,
                    "close": close,
                    "volume": rng.integers(1, 10_000, BARS).astype(float),
                    "source_file": f"{symbol}.csv",
                    "source_row": np.arange(BARS),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def ingest_writer(root: Path, symbols: list[str], index: int) -> tuple[int, int]:
    """One raw_ohlcv writer: its symbols' bars into raw.ohlcv; returns (rows, peak RSS)."""
    with PeakRSS() as memory:
        bars = generated_bars(symbols, index)
        store = Store(root)
        con, loaded = store.open()
        ensure_tables(con)
        with transaction(con):
            replace_symbols(con, "raw.ohlcv", bars, symbols)
        store.commit(con, loaded, f"ingest-{index}")
    return len(bars), memory.peak


def validate_and_build(root: Path) -> dict:
    """clean_ohlcv then hierarchical_features, each in its own connection as the assets do."""
    from hrm_core.core.config import ValidationConfig
    from hrm_core.data.validation import validate_ohlcv
    from hrm_core.data.warehouse import read_bars
    from hrm_core.features.build import update_features

    store, timings = Store(root), {}
    with PeakRSS() as memory:
        started = time.perf_counter()
        con, loaded = store.open()
        symbols = [r[0] for r in con.execute("SELECT DISTINCT symbol FROM raw.ohlcv ORDER BY 1").fetchall()]
        report = validate_ohlcv(read_bars(con, "raw.ohlcv", symbols), ValidationConfig())
        with transaction(con):
            replace_symbols(con, "clean.ohlcv", report.clean, symbols)
            replace_symbols(con, "quarantine.ohlcv", report.quarantine, symbols)
        store.commit(con, loaded, "validate")
        timings["validate_s"] = time.perf_counter() - started
        started = time.perf_counter()
        con, loaded = store.open()
        update_features(con)
        store.commit(con, loaded, "features")
        timings["features_s"] = time.perf_counter() - started
        con, _ = store.open()
        raw, clean, quarantined = con.execute(
            "SELECT (SELECT count(*) FROM raw.ohlcv), (SELECT count(*) FROM clean.ohlcv), "
            "(SELECT count(*) FROM quarantine.ohlcv)"
        ).fetchone()
    return timings | {"raw": raw, "clean": clean, "quarantined": quarantined, "peak_rss": memory.peak}


def bench_ingest(symbols: int) -> dict:
    names = [f"S{i:04d}" for i in range(symbols)]
    chunks = [names[i::WRITERS] for i in range(WRITERS)]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spawn = get_context("spawn")
        started = time.perf_counter()
        with ProcessPoolExecutor(WRITERS, mp_context=spawn) as pool:
            written = list(pool.map(ingest_writer, [root] * WRITERS, chunks, range(WRITERS)))
        ingest_s = time.perf_counter() - started
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            built = pool.submit(validate_and_build, root).result()
    rows_in = sum(rows for rows, _ in written)
    return {
        "ingest_s": round(ingest_s, 1),
        "validate_s": round(built["validate_s"], 1),
        "features_s": round(built["features_s"], 1),
        "rows_in": rows_in,
        "raw": built["raw"],
        "clean": built["clean"],
        "quarantined": built["quarantined"],
        "nothing_lost": rows_in == built["raw"] == built["clean"] + built["quarantined"],
        "writer_peak_gib": round(max(peak for _, peak in written) / 2**30, 2),
        "build_peak_gib": round(built["peak_rss"] / 2**30, 2),
    }


def feature_rows(symbol: str, version: int) -> pd.DataFrame:
    rng = np.random.default_rng(version)
    frame = pd.DataFrame(rng.normal(size=(BARS, 10)), columns=[f"f{i}" for i in range(10)])
    return frame.assign(symbol=symbol, ts=pd.date_range("2010-01-01", periods=BARS, freq="D"))


def bench_reads(commits: int) -> dict:
    """Rewrite one symbol per commit; time a read of one symbol at 10, 100, ... commits."""
    symbols = [f"S{i:03d}" for i in range(100)]
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder))
        for n in range(1, commits + 1):
            _rewrite(store, symbols[n % len(symbols)], n)
            if n in (10, 100, 1_000, commits):
                found[f"read_after_{n}_ms"] = _read_ms(store, symbols[1])
        started = time.perf_counter()
        store._backend().maintain(set(), timedelta(0), timedelta(0))
        found["maintenance_s"] = round(time.perf_counter() - started, 1)
        found[f"read_after_{commits}_maintained_ms"] = _read_ms(store, symbols[1])
    return found


def _rewrite(store: Store, symbol: str, n: int) -> None:
    """One commit that replaces one symbol's partition, as a partition writer's commit does."""
    rows = feature_rows(symbol, n)
    columns = [
        *(pa.field(f"f{i}", pa.float64()) for i in range(10)),
        ("symbol", pa.string()),
        ("ts", pa.timestamp("us")),
    ]
    arrow = pa.Table.from_pandas(rows, preserve_index=False).cast(pa.schema(columns))
    table = create_table(store._backend().catalog(), "features.wide", arrow.schema)  # partitioned by symbol
    table.overwrite(arrow, overwrite_filter=EqualTo("symbol", symbol))


def _read_ms(store: Store, symbol: str) -> float:
    """One symbol's rows: a scan filtered on the partition (best of three)."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        assert store._backend().read("features.wide", symbols=[symbol]).num_rows == BARS
        timings.append(time.perf_counter() - started)
    return round(1000 * min(timings), 1)


def same_symbol_writer(root: Path, trial: int, writer: int, barrier) -> str:
    """Replace S0 by rows that name this trial and writer, from the snapshot both writers read."""
    store = Store(root)
    con, loaded = store.open()
    ensure_tables(con)
    bars = generated_bars(["S0"], 100 + 2 * trial + writer).assign(source_file=f"trial{trial}-writer{writer}")
    with transaction(con):
        replace_symbols(con, "raw.ohlcv", bars, ["S0"])
    barrier.wait(60)
    try:
        store.commit(con, loaded, f"writer-{writer}")
    except ConflictError:
        return "failed loudly"
    return "landed"


def bench_conflicts(trials: int) -> dict:
    """A trial is sound when exactly one writer's rows are there and that writer landed, and the
    other failed loudly (or landed after it, in order, which two writers from one snapshot cannot)."""
    spawn = get_context("spawn")
    silent = loud = 0
    with tempfile.TemporaryDirectory() as folder, spawn.Manager() as manager:
        root = Path(folder)
        with ProcessPoolExecutor(2, mp_context=spawn) as pool:
            pool.submit(ingest_writer, root, ["S0"], 0).result()
            for trial in range(trials):
                barrier = manager.Barrier(2)
                args = ([root] * 2, [trial] * 2, [0, 1], [barrier] * 2)
                outcomes = list(pool.map(same_symbol_writer, *args))
                con, _ = Store(root).open()
                there = {r[0] for r in con.execute("SELECT DISTINCT source_file FROM raw.ohlcv").fetchall()}
                landed = {f"trial{trial}-writer{w}" for w, o in enumerate(outcomes) if o == "landed"}
                loud += outcomes.count("failed loudly")
                silent += len(landed) != 1 or there != landed  # a success whose rows are gone
    return {"trials": trials, "silent_losses": silent, "loud_failures": loud}


def fill(con: duckdb.DuckDBPyConnection, bars: pd.DataFrame) -> None:
    """The OHLCV tables as validation leaves them: raw bars, the clean ones, the broken ones quarantined."""
    symbols = sorted(bars["symbol"].unique())
    broken = bars["low"] > bars["high"]
    ensure_tables(con)
    with transaction(con):
        replace_symbols(con, "raw.ohlcv", bars, symbols)
        replace_symbols(con, "clean.ohlcv", bars[~broken], symbols)
        replace_symbols(
            con, "quarantine.ohlcv", bars[broken].assign(rules=[["low_above_high"]] * broken.sum()), symbols
        )


def bench_build(symbols: int, rounds: int) -> dict:
    """``hierarchical_features`` on each warehouse from the same bars; each round on fresh ones."""
    from hrm_core.features.build import READS, WRITES, update_features

    bars = generated_bars([f"S{i:04d}" for i in range(symbols)], 0)
    warm = duckdb.connect()
    fill(warm, bars[bars["symbol"] == "S0000"])
    update_features(warm)  # the kernels loaded from numba's cache before any timing
    timings: dict[str, list[float]] = {"iceberg_s": [], "duckdb_file_s": [], "duckdb_memory_s": []}
    rows = set()
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            store = Store(root)
            con, loaded = store.open()
            fill(con, bars)
            store.commit(con, loaded, "validate")
            with duckdb.connect(str(root / "warehouse.duckdb")) as con:
                fill(con, bars)
            memory = duckdb.connect()
            fill(memory, bars)

            started = time.perf_counter()
            con, loaded = store.open(READS, WRITES)  # what hierarchical_features declares
            rows.add(update_features(con).rows)
            store.commit(con, loaded, "features")
            timings["iceberg_s"].append(time.perf_counter() - started)

            started = time.perf_counter()
            with duckdb.connect(str(root / "warehouse.duckdb")) as con:
                rows.add(update_features(con).rows)
            timings["duckdb_file_s"].append(time.perf_counter() - started)

            started = time.perf_counter()
            rows.add(update_features(memory).rows)
            timings["duckdb_memory_s"].append(time.perf_counter() - started)
            con, _ = store.open()
            rows.add(con.execute("SELECT count(*) FROM features.hierarchical").fetchone()[0])
    best = {name: round(min(values), 2) for name, values in timings.items()}
    return best | {
        "rows": sorted(rows),
        "iceberg_vs_duckdb_file": round(best["iceberg_s"] / best["duckdb_file_s"], 2),
        "iceberg_vs_duckdb_memory": round(best["iceberg_s"] / best["duckdb_memory_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("ingest", "reads", "conflicts", "build"))
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--commits", type=int, default=1_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--build-symbols", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for work in ("ingest", "reads", "conflicts", "build"):
        if args.only and work != args.only:
            continue
        if work == "ingest":
            result = bench_ingest(args.symbols)
        elif work == "reads":
            result = bench_reads(args.commits)
        elif work == "conflicts":
            result = bench_conflicts(args.trials)
        else:
            result = bench_build(args.build_symbols, args.rounds)
        print(json.dumps({"work": work, **result}), flush=True)


if __name__ == "__main__":
    main()
