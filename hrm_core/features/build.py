"""Build ``features.hierarchical`` from ``clean.ohlcv`` by running the group SQL files in order.

The SQL files live in ``sql/`` (one per feature group, run in file-name order); each group writes
a temp table keyed by (symbol, n) and ``90_hierarchical.sql`` joins them. The whole build runs in
one transaction, so a failure leaves the previous feature table in place.
"""

from __future__ import annotations

from importlib.resources import files

import duckdb

SQL_DIR = files("hrm_core.features") / "sql"


def sql_files() -> list[str]:
    """Names of the feature SQL files in execution order."""
    return sorted(p.name for p in SQL_DIR.iterdir() if p.name.endswith(".sql"))


def build_features(con: duckdb.DuckDBPyConnection, source: str = "clean.ohlcv") -> int:
    """Compute every registered feature for the bars in ``source``; return the row count."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("CREATE SCHEMA IF NOT EXISTS features")
        con.execute(f"CREATE OR REPLACE TEMP VIEW source_bars AS SELECT * FROM {source}")
        for name in sql_files():
            con.execute((SQL_DIR / name).read_text())
        rows = con.execute("SELECT count(*) FROM features.hierarchical").fetchone()[0]
        for table in ("f_regime", "f_calendar", "f_volume", "f_volatility", "f_momentum", "f_trend", "bars"):
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return rows
