"""The data job at universe size: ``hrm-trading run --job data --source csv --path <folder>`` on
1,000 CSV files × 2,000 daily bars with 10 planted faults, end to end as a user runs it (a fresh
process, a fresh HRM_HOME, the local profile), then validation of the same 2 M raw rows alone.
Checks rows in = clean + quarantined and that every planted fault is quarantined with its rule.

    python benchmarks/bench_data_job.py [--files 1000] [--bars 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAULTS = (
    ("high below low", "high_ge_open_close"),
    ("negative volume", "volume_non_negative"),
    ("empty close", "ohlc_not_null"),
    ("repeated date", "ts_strictly_increasing"),
    ("zero open", "prices_positive"),
    ("inf high", "values_finite_and_sane"),
    ("year 1850", "ts_present_in_1900_2200"),
    ("empty volume", "volume_not_null"),
    ("low above close", "low_le_open_close"),
    ("negative low", "prices_positive"),
)
"""Each planted fault and the rule that must quarantine its row."""


def write_files(folder: Path, files: int, bars: int) -> list[tuple[str, int, str]]:
    """``files`` Yahoo-style CSVs of random-walk daily bars; returns the planted faults as
    (file, line in the file counting the header as line 0, rule)."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2010-01-01", periods=bars, freq="D").strftime("%Y-%m-%d").to_numpy()
    faults = FAULTS[:files]  # one file, one fault
    faulty = dict(zip(rng.choice(files, len(faults), replace=False).tolist(), faults, strict=True))
    planted = []
    for index in range(files):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
        spread = np.abs(rng.normal(0, 0.005, bars)) * close
        frame = pd.DataFrame(
            {
                "Date": dates,
                "Open": close.round(4),
                "High": (close + spread).round(4),
                "Low": (close - spread).round(4),
                "Close": close.round(4),
                "Volume": rng.integers(1, 10_000, bars).astype(str),
            }
        )
        name = folder / f"S{index:04d}.csv"
        if index in faulty:
            fault, rule = faulty[index]
            row = int(rng.integers(1, bars - 1))
            _plant(frame, row, fault)
            planted.append((str(name), row + 1, rule))
        frame.to_csv(name, index=False)
    return planted


def _plant(frame: pd.DataFrame, row: int, fault: str) -> None:
    frame["Close"] = frame["Close"].astype(object)
    edits = {
        "high below low": {"High": frame.at[row, "Low"] - 1},
        "negative volume": {"Volume": "-5"},
        "empty close": {"Close": ""},
        "repeated date": {"Date": frame.at[row - 1, "Date"]},
        "zero open": {"Open": 0.0},
        "inf high": {"High": np.inf},
        "year 1850": {"Date": "1850-01-01"},
        "empty volume": {"Volume": ""},
        "low above close": {"Low": frame.at[row, "Close"] + 1},
        "negative low": {"Low": -1.0},
    }
    for column, value in edits[fault].items():
        frame[column] = frame[column].astype(object)
        frame.at[row, column] = value


def run_job(folder: Path, home: Path) -> tuple[float, str]:
    """The command a user runs, in a fresh process; returns its wall time and output."""
    env = {**os.environ, "HRM_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("HRM_PROFILE", None)
    command = [sys.executable, "-m", "pipelines.cli", "run", "--job", "data", "--source", "csv"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--path", str(folder)], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        output = done.stdout[-3000:] + done.stderr[-3000:]
        raise SystemExit(f"the data job failed ({done.returncode}):\n{output}")
    return seconds, done.stdout


def validation_alone(home: Path) -> tuple[float, int]:
    """Validation of the warehouse's raw rows, as ``clean_ohlcv`` runs it; returns seconds, rows."""
    from hrm_core.core.config import ValidationConfig
    from hrm_core.data.validation import validate_ohlcv
    from hrm_core.data.warehouse import read_bars

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        symbols = [r[0] for r in con.execute("SELECT DISTINCT symbol FROM raw.ohlcv ORDER BY 1").fetchall()]
        bars = read_bars(con, "raw.ohlcv", symbols)
    validate_ohlcv(bars.head(2_000), ValidationConfig())  # the one-off set-up (GE's context) apart
    started = time.perf_counter()
    report = validate_ohlcv(bars, ValidationConfig())
    seconds = time.perf_counter() - started
    assert len(report.clean) + len(report.quarantine) == len(bars)
    return seconds, len(bars)


def check_rows(home: Path, planted: list[tuple[str, int, str]], rows_in: int) -> dict:
    """Rows in = clean + quarantined in the warehouse, and each planted fault quarantined by its rule."""
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        raw, clean, quarantined = con.execute(
            "SELECT (SELECT count(*) FROM raw.ohlcv), (SELECT count(*) FROM clean.ohlcv), "
            "(SELECT count(*) FROM quarantine.ohlcv)"
        ).fetchone()
        rules = {
            (file, row): set(names)
            for file, row, names in con.execute(
                "SELECT source_file, source_row, rules FROM quarantine.ohlcv"
            ).fetchall()
        }
    caught = sum(rule in rules.get((file, row), set()) for file, row, rule in planted)
    return {
        "rows_in": rows_in,
        "raw": raw,
        "clean": clean,
        "quarantined": quarantined,
        "nothing_lost": rows_in == raw == clean + quarantined,
        "faults_caught": f"{caught}/{len(planted)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000)
    parser.add_argument("--bars", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hrm-bench-data-") as tmp:
        folder, home = Path(tmp) / "csv", Path(tmp) / "home"
        folder.mkdir()
        planted = write_files(folder, args.files, args.bars)
        job_s, _ = run_job(folder, home)
        validate_s, rows = validation_alone(home)
        checked = check_rows(home, planted, args.files * args.bars)
    print(f"{args.files:,} CSV files × {args.bars:,} daily bars, {len(planted)} planted faults")
    print(f"{'work':<42} {'seconds':>8}")
    print(f"{'hrm-trading run --job data (end to end)':<42} {job_s:>8.1f}")
    print(f"{f'validation of the {rows:,} raw rows':<42} {validate_s:>8.1f}")
    for key, value in checked.items():
        print(f"{key:<42} {value!s:>8}")


if __name__ == "__main__":
    main()
