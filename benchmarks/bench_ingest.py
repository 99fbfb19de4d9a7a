"""Large input: a 3 M-row CSV through the project's reader and validation (what ``raw_ohlcv`` and
``clean_ohlcv`` do), beside ``pandas.read_csv`` of the same file as the reference, each in its own
process so that peak memory is its own.

    python benchmarks/bench_ingest.py [--rows 3000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

STEPS = ("reference", "read", "read_and_validate")


def write_csv(rows: int, path: Path) -> None:
    """One symbol of minute bars, written as a vendor would (ISO stamps, six columns)."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, rows)))
    spread = np.abs(rng.normal(0, 2e-4, rows)) * close
    frame = pd.DataFrame(
        {
            "Date": pd.date_range("2000-01-03", periods=rows, freq="min").strftime("%Y-%m-%dT%H:%M:%S"),
            "Open": close,
            "High": close + spread,
            "Low": close - spread,
            "Close": close,
            "Volume": rng.integers(1, 10_000, rows),
        }
    )
    frame.to_csv(path, index=False, float_format="%.6f")


def run_step(step: str, path: Path) -> dict:
    """Run ``step`` on ``path`` in this process; returns seconds, peak RSS and rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.memory import PeakRSS
    from hrm_core.core.config import ValidationConfig
    from hrm_core.data.readers import read_ohlcv_bytes
    from hrm_core.data.validation import validate_ohlcv

    with PeakRSS() as memory:
        started = time.perf_counter()
        if step == "reference":
            rows = len(pd.read_csv(path, parse_dates=["Date"]))
        else:
            bars = read_ohlcv_bytes(path.read_bytes(), path.name)
            rows = len(bars)
            if step == "read_and_validate":
                report = validate_ohlcv(bars, ValidationConfig())
                assert len(report.clean) + len(report.quarantine) == rows
        seconds = time.perf_counter() - started
    return {
        "step": step,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(memory.peak / 2**30, 2),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, Path(args.path))))
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "BIG.csv"
        write_csv(args.rows, path)
        print(f"{args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB CSV")
        for step in STEPS:
            out = subprocess.run(
                [sys.executable, __file__, "--step", step, "--path", str(path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"{step:>18}: {result['seconds']:6.1f} s, peak RSS {result['peak_rss_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
