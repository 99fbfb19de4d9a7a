"""Transactional writes to the DuckDB warehouse.

Every write runs in one transaction: either all of a step's tables change or none does, so a
failed run never leaves a half-written table behind. Timestamps are stored as UTC ``TIMESTAMP``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd

from hrm_core.data.schema import OHLCV_COLUMNS

SCHEMAS = ("raw", "quarantine", "clean", "features", "labels", "splits")

TABLE_DDL = {
    "raw.ohlcv": "symbol VARCHAR, ts TIMESTAMP, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, "
    "volume DOUBLE, source_file VARCHAR, source_row BIGINT",
    "clean.ohlcv": "symbol VARCHAR, ts TIMESTAMP, open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, "
    "volume DOUBLE",
    "quarantine.ohlcv": "symbol VARCHAR, ts TIMESTAMP, open DOUBLE, high DOUBLE, low DOUBLE, "
    "close DOUBLE, volume DOUBLE, source_file VARCHAR, source_row BIGINT, rules VARCHAR[]",
}


_OPEN: set[int] = set()
"""Connections (by id) inside a ``transaction`` block: DuckDB aborts a transaction that is asked to
begin another, so a nested block must know it is nested without asking."""


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run the block in one transaction; roll back on any exception. A block inside another on the
    same connection joins it: the outer commit or rollback covers both."""
    if id(con) in _OPEN:
        yield con
        return
    con.execute("BEGIN TRANSACTION")
    _OPEN.add(id(con))
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        _OPEN.discard(id(con))
    con.execute("COMMIT")


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse schemas and the OHLCV tables if they do not exist."""
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table, columns in TABLE_DDL.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")


def to_utc_naive(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with ``ts`` as naive UTC, the warehouse's timestamp convention."""
    ts = frame["ts"]
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        frame = frame.assign(ts=ts.dt.tz_convert("UTC").dt.tz_localize(None))
    return frame


def replace_symbols(
    con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, symbols: list[str]
) -> None:
    """Replace the rows of ``symbols`` in ``table`` by ``frame`` (inside the caller's transaction).

    Re-ingesting the same data is therefore idempotent: the table ends the same either way.
    """
    columns = [c.split()[0] for c in TABLE_DDL[table].split(", ")]
    staged = to_utc_naive(frame)[columns]
    con.execute(f"DELETE FROM {table} WHERE symbol IN (SELECT unnest(?))", [symbols])
    con.register("staged_rows", staged)
    try:
        con.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM staged_rows")
    finally:
        con.unregister("staged_rows")


def drop_other_symbols(con: duckdb.DuckDBPyConnection, symbols: list[str]) -> list[str]:
    """Delete every symbol but ``symbols`` from the OHLCV tables (inside the caller's transaction);
    return the dropped symbols. Features, labels and splits are rebuilt from ``clean.ohlcv``."""
    dropped = sorted(
        row[0]
        for row in con.execute(
            "SELECT DISTINCT symbol FROM raw.ohlcv WHERE symbol NOT IN (SELECT unnest(?))", [symbols]
        ).fetchall()
    )
    for table in TABLE_DDL:
        con.execute(f"DELETE FROM {table} WHERE symbol NOT IN (SELECT unnest(?))", [symbols])
    return dropped


def read_bars(con: duckdb.DuckDBPyConnection, table: str, symbols: list[str]) -> pd.DataFrame:
    """Bars of ``symbols`` from ``table`` as a frame with UTC-aware timestamps."""
    lineage = ", source_file, source_row" if table == "raw.ohlcv" else ""
    frame = con.execute(
        f"SELECT {', '.join(OHLCV_COLUMNS)}{lineage} FROM {table} "
        "WHERE symbol IN (SELECT unnest(?)) ORDER BY symbol, ts",
        [symbols],
    ).df()
    frame["ts"] = pd.to_datetime(frame["ts"]).dt.tz_localize("UTC")
    return frame
