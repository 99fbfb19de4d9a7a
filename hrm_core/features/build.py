"""Build ``features.hierarchical`` from ``clean.ohlcv`` by running the group SQL files in order.

The SQL files live in ``sql/`` (one per feature group, run in file-name order); each group writes
a temp table keyed by (symbol, n) and ``90_hierarchical.sql`` joins them. The whole build runs in
one transaction, so a failure leaves the previous feature table in place.
"""

from __future__ import annotations

from importlib.resources import files

import duckdb

from hrm_core.data.warehouse import transaction

SQL_DIR = files("hrm_core.features") / "sql"
GROUP_TABLES = ("f_regime", "f_calendar", "f_volume", "f_volatility", "f_momentum", "f_trend", "bars")
"""Temp tables the group files create; dropped once the feature table is written."""


def sql_files() -> list[str]:
    """Names of the feature SQL files in execution order."""
    return sorted(p.name for p in SQL_DIR.iterdir() if p.name[:2].isdigit())


def build_features(con: duckdb.DuckDBPyConnection, source: str = "clean.ohlcv") -> int:
    """Compute every registered feature for the bars in ``source``; return the row count."""
    with transaction(con):
        con.execute("CREATE SCHEMA IF NOT EXISTS features")
        con.execute(f"CREATE OR REPLACE TEMP VIEW source_bars AS SELECT * FROM {source}")
        for name in sql_files():
            con.execute((SQL_DIR / name).read_text())
        for table in GROUP_TABLES:
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")
        return con.execute("SELECT count(*) FROM features.hierarchical").fetchone()[0]
