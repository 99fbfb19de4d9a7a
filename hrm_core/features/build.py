"""Build ``features.hierarchical`` from ``clean.ohlcv`` by running the group SQL files in order.

The SQL files live in ``sql/`` (one per feature group, run in file-name order); each group writes
a temp table keyed by (symbol, n) and ``90_hierarchical.sql`` joins them in the view
``hierarchical_batch``. Features never cross symbols, so the build runs over batches of whole
symbols of about ``ROWS_PER_BATCH`` bars: memory stays bounded, and each batch is committed to a
staging table on its own (one transaction holding every batch's uncommitted rows is markedly
slower). The staging table replaces ``features.hierarchical`` in one final transaction, so a
failed build leaves the previous feature table as it was.
"""

from __future__ import annotations

from importlib.resources import files

import duckdb

from hrm_core.data.warehouse import transaction

SQL_DIR = files("hrm_core.features") / "sql"
STAGING_TABLE = "features.hierarchical_staging"
ROWS_PER_BATCH = 2_000_000
TEMP_OBJECTS = (
    ("VIEW", "hierarchical_batch"),
    ("VIEW", "source_bars"),
    *(("TABLE", t) for t in ("f_regime", "f_calendar", "f_volume", "f_volatility", "f_momentum", "f_trend")),
    ("TABLE", "bars"),
    ("TABLE", "batch_symbols"),
)
"""Temp objects the builder and the group files create; dropped once the build ends."""


def sql_files() -> list[str]:
    """Names of the feature SQL files in execution order."""
    return sorted(p.name for p in SQL_DIR.iterdir() if p.name[:2].isdigit())


def build_features(
    con: duckdb.DuckDBPyConnection, source: str = "clean.ohlcv", rows_per_batch: int = ROWS_PER_BATCH
) -> int:
    """Compute every registered feature for the bars in ``source``; return the row count."""
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    try:
        for i, symbols in enumerate(symbol_batches(con, source, rows_per_batch)):
            _build_batch(con, source, symbols, first=i == 0)
        with transaction(con):
            con.execute("DROP TABLE IF EXISTS features.hierarchical")
            con.execute(f"ALTER TABLE {STAGING_TABLE} RENAME TO hierarchical")
    finally:
        con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
        for kind, name in TEMP_OBJECTS:
            con.execute(f"DROP {kind} IF EXISTS temp.{name}")
    return con.execute("SELECT count(*) FROM features.hierarchical").fetchone()[0]


def symbol_batches(con: duckdb.DuckDBPyConnection, source: str, rows_per_batch: int) -> list[list[str]]:
    """Whole symbols grouped into batches of at most ``rows_per_batch`` bars (a longer symbol is a
    batch of its own); one empty batch when ``source`` is empty, so the table is still created."""
    counts = con.execute(f"SELECT symbol, count(*) FROM {source} GROUP BY symbol ORDER BY symbol").fetchall()
    batches: list[list[str]] = [[]]
    rows = 0
    for symbol, count in counts:
        if batches[-1] and rows + count > rows_per_batch:
            batches.append([])
            rows = 0
        batches[-1].append(symbol)
        rows += count
    return batches


def _build_batch(con: duckdb.DuckDBPyConnection, source: str, symbols: list[str], *, first: bool) -> None:
    """Run the group files on ``symbols`` and append their features to the staging table."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE batch_symbols AS SELECT unnest(?::VARCHAR[]) AS symbol", [symbols]
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW source_bars AS "
        f"SELECT * FROM {source} WHERE symbol IN (SELECT symbol FROM batch_symbols)"
    )
    for name in sql_files():
        con.execute((SQL_DIR / name).read_text())
    write = f"CREATE TABLE {STAGING_TABLE} AS" if first else f"INSERT INTO {STAGING_TABLE}"
    con.execute(f"{write} SELECT * FROM hierarchical_batch")
