"""Checks that keep the feature table honest: finite after warm-up, and point-in-time."""

from __future__ import annotations

import duckdb
import numpy as np

from hrm_core.core.feature_registry import FEATURES
from hrm_core.features.build import build_features


def nonfinite_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Per feature, rows past its lookback that are NULL, NaN or infinite (all should be 0)."""
    counts = ", ".join(
        f"count(*) FILTER (WHERE n >= {f.lookback} AND ({f.name} IS NULL OR NOT isfinite({f.name}::DOUBLE)))"
        f" AS {f.name}"
        for f in FEATURES
    )
    row = con.execute(
        f"""
        SELECT {counts} FROM (
            SELECT *, row_number() OVER (PARTITION BY symbol ORDER BY ts) - 1 AS n
            FROM features.hierarchical
        )
        """
    ).df()
    return {name: int(row[name].iloc[0]) for name in row.columns}


def point_in_time_difference(
    con: duckdb.DuckDBPyConnection, symbol: str, cut_ts: object, source: str = "clean.ohlcv"
) -> float:
    """Largest relative difference between stored features at ts ≤ ``cut_ts`` and features rebuilt
    from bars ≤ ``cut_ts`` only. Any feature that peeks at later bars makes this non-zero."""
    bars = con.execute(
        f"SELECT * FROM {source} WHERE symbol = ? AND ts <= ? ORDER BY ts", [symbol, cut_ts]
    ).df()
    stored = con.execute(
        "SELECT * FROM features.hierarchical WHERE symbol = ? AND ts <= ? ORDER BY ts", [symbol, cut_ts]
    ).df()
    scratch = duckdb.connect()
    scratch.register("cut_bars", bars)
    build_features(scratch, source="cut_bars")
    rebuilt = scratch.execute("SELECT * FROM features.hierarchical ORDER BY ts").df()
    scratch.close()
    columns = [f.name for f in FEATURES]
    a = stored[columns].to_numpy(dtype=float)
    b = rebuilt[columns].to_numpy(dtype=float)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    both = ~np.isnan(a)
    scale = np.maximum(np.abs(a[both]), 1e-12)
    return float(np.max(np.abs(a[both] - b[both]) / scale, initial=0.0))
