"""Build ``features.hierarchical`` from ``clean.ohlcv``: DuckDB reads the bars and stores the
table, the numba kernels (``kernels.py``) compute the features, and the calendar features are SQL.

Features never cross symbols, so the build runs over batches of whole symbols of about
``ROWS_PER_BATCH`` bars: memory stays bounded. A full build (``build_features``) appends each batch
to a staging table that replaces the feature table in one final transaction, so a failed build
leaves the previous table as it was.

Beside the table, ``features.hierarchical_state`` keeps, per symbol, its last bar, the recurrences'
values there, and a fingerprint of the bars it was built from. ``update_features`` uses it for a
daily ingest: a symbol whose earlier bars are unchanged gets only its new bars computed, from the
saved recurrences and the last ``HISTORY_BARS`` bars for the windows, and the result equals a full
rebuild bit for bit (``tests/test_features.py``); any other symbol is rebuilt whole.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from hrm_core.core.feature_registry import FEATURES, INTEGER_FEATURES
from hrm_core.data.warehouse import transaction
from hrm_core.features.kernels import HISTORY_BARS, KERNEL_COLUMNS, STATE_COLUMNS, batch_features

TABLE, STATE_TABLE = "features.hierarchical", "features.hierarchical_state"
STAGING_TABLE, STATE_STAGING = "features.hierarchical_staging", "features.hierarchical_state_staging"
READS, WRITES = ("clean.ohlcv",), (TABLE, STATE_TABLE)
"""The warehouse tables ``update_features`` reads only, and those it changes (from ``clean.ohlcv``)."""
ROWS_PER_BATCH = 1_000_000
BARS = "ts, open, high, low, close, volume"


def fingerprint(table: str = "") -> str:
    """Per symbol, what its bars hash to (``table``: a qualifier such as ``src.``): a changed,
    added or removed bar changes it."""
    return f"bit_xor(hash({', '.join(table + c for c in BARS.split(', '))}))"


CALENDAR_SQL = {
    "s_dow_sin": "sin(2 * pi() * isodow(ts) / 7)",
    "s_dow_cos": "cos(2 * pi() * isodow(ts) / 7)",
    "s_month_sin": "sin(2 * pi() * (month(ts) - 1) / 12)",
    "s_month_cos": "cos(2 * pi() * (month(ts) - 1) / 12)",
    "s_time_of_day_sin": "sin(2 * pi() * (hour(ts) * 60 + minute(ts)) / 1440)",
    "s_time_of_day_cos": "cos(2 * pi() * (hour(ts) * 60 + minute(ts)) / 1440)",
}
"""Day of week, month and UTC time of day on the unit circle (Friday next to Monday, 23:00 next to
00:00): SQL expressions of the bar's timestamp."""


def _column_sql(name: str) -> str:
    if name in CALENDAR_SQL:
        return f"{CALENDAR_SQL[name]} AS {name}"
    return f"{name}::INTEGER AS {name}" if name in INTEGER_FEATURES else name


SELECT_FEATURES = ", ".join(["symbol::VARCHAR AS symbol", "ts", *(_column_sql(f.name) for f in FEATURES)])
"""The table's columns, in registry order, from a batch of kernel output."""
STATE_SCHEMA = ", ".join(
    ["symbol VARCHAR", "n BIGINT", "ts TIMESTAMP", "history_ts TIMESTAMP", "fingerprint UBIGINT"]
    + [f"{name} DOUBLE" for name in STATE_COLUMNS]
)


@dataclass
class Update:
    """What ``update_features`` did."""

    rows: int  # rows in the table afterwards
    appended: int  # rows computed from saved state (new bars of unchanged symbols)
    rebuilt: list[str]  # symbols computed whole (new, changed, or too short to continue)
    full: bool  # no usable state: a full build


def build_features(
    con: duckdb.DuckDBPyConnection, source: str = "clean.ohlcv", rows_per_batch: int = ROWS_PER_BATCH
) -> int:
    """Compute every registered feature for the bars in ``source``; return the row count."""
    con.execute("CREATE SCHEMA IF NOT EXISTS features")
    try:
        _create(con, STAGING_TABLE, STATE_STAGING)
        _build_batches(con, source, symbol_batches(con, source, rows_per_batch), STAGING_TABLE, STATE_STAGING)
        with transaction(con):
            for table, staging in ((TABLE, STAGING_TABLE), (STATE_TABLE, STATE_STAGING)):
                con.execute(f"DROP TABLE IF EXISTS {table}")
                con.execute(f"ALTER TABLE {staging} RENAME TO {table.split('.')[1]}")
    finally:
        con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
        con.execute(f"DROP TABLE IF EXISTS {STATE_STAGING}")
    return con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


def update_features(
    con: duckdb.DuckDBPyConnection, source: str = "clean.ohlcv", rows_per_batch: int = ROWS_PER_BATCH
) -> Update:
    """Bring the table up to date with ``source`` by computing only what changed: new bars of
    symbols whose earlier bars are unchanged continue from the saved state, other symbols are
    rebuilt whole, symbols gone from ``source`` are dropped. One transaction; a full build when
    there is no state yet."""
    if not _exists(con, TABLE) or not _exists(con, STATE_TABLE):
        return Update(build_features(con, source, rows_per_batch), 0, [], full=True)
    plan = con.execute(
        f"""
        SELECT b.symbol, b.rows, b.new_rows, b.old_fingerprint = s.fingerprint AND b.old_rows = s.n + 1
            AND s.n + 1 >= {HISTORY_BARS} AS continues, b.fingerprint
        FROM (
            SELECT src.symbol, count(*) AS rows, {fingerprint("src.")} AS fingerprint,
                   count(*) FILTER (WHERE src.ts > s.ts) AS new_rows,
                   count(*) FILTER (WHERE src.ts <= s.ts) AS old_rows,
                   {fingerprint("src.")} FILTER (WHERE src.ts <= s.ts) AS old_fingerprint
            FROM {source} AS src LEFT JOIN {STATE_TABLE} AS s USING (symbol)
            GROUP BY src.symbol
        ) AS b LEFT JOIN {STATE_TABLE} AS s USING (symbol)
        ORDER BY b.symbol
        """
    ).fetchall()
    present = {symbol for symbol, *_ in plan}
    gone = [s for (s,) in con.execute(f"SELECT symbol FROM {STATE_TABLE}").fetchall() if s not in present]
    continued = [symbol for symbol, _, new_rows, continues, *_ in plan if continues and new_rows]
    rebuilt = [symbol for symbol, _, _, continues, *_ in plan if not continues]
    with transaction(con):
        for table in (TABLE, STATE_TABLE):
            con.execute(
                f"DELETE FROM {table} WHERE symbol IN (SELECT unnest(?::VARCHAR[]))", [gone + rebuilt]
            )
        _build_batches(con, source, _batches_of(plan, rebuilt, rows_per_batch), TABLE, STATE_TABLE)
        appended = 0
        current = {symbol: (symbol, rows, fingerprint_now) for symbol, rows, *_, fingerprint_now in plan}
        for symbols in _batches_of(plan, continued, rows_per_batch):
            appended += _continue_symbols(con, source, symbols, [current[symbol] for symbol in symbols])
    rows = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    return Update(rows, appended, rebuilt, full=False)


def symbol_batches(con: duckdb.DuckDBPyConnection, source: str, rows_per_batch: int) -> list[list[str]]:
    """Whole symbols grouped into batches of at most ``rows_per_batch`` bars (a longer symbol is a
    batch of its own)."""
    counts = con.execute(f"SELECT symbol, count(*) FROM {source} GROUP BY symbol ORDER BY symbol").fetchall()
    return _group(counts, rows_per_batch)


def _group(counts: list[tuple[str, int]], rows_per_batch: int) -> list[list[str]]:
    batches: list[list[str]] = []
    rows = 0
    for symbol, count in counts:
        if not batches or (batches[-1] and rows + count > rows_per_batch):
            batches.append([])
            rows = 0
        batches[-1].append(symbol)
        rows += count
    return batches


def _batches_of(plan: list[tuple], symbols: list[str], rows_per_batch: int) -> list[list[str]]:
    wanted = set(symbols)
    return _group([(s, rows) for s, rows, *_ in plan if s in wanted], rows_per_batch)


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def _create(con: duckdb.DuckDBPyConnection, table: str, state_table: str) -> None:
    """Empty feature and state tables of the right schema."""
    columns = ["symbol VARCHAR", "ts TIMESTAMP"] + [
        f"{f.name} {'INTEGER' if f.name in INTEGER_FEATURES else 'DOUBLE'}" for f in FEATURES
    ]
    con.execute(f"CREATE OR REPLACE TABLE {table} ({', '.join(columns)})")
    con.execute(f"CREATE OR REPLACE TABLE {state_table} ({STATE_SCHEMA})")


def _bars(con: duckdb.DuckDBPyConnection, query: str, params: list) -> dict[str, np.ndarray]:
    bars = con.execute(query, params).fetchnumpy()
    return {k: np.ascontiguousarray(v) for k, v in bars.items()}


def _build_batches(
    con: duckdb.DuckDBPyConnection, source: str, batches: list[list[str]], table: str, state_table: str
) -> None:
    """Compute each batch of symbols whole and append their rows and states. The kernels of the
    next batch run in a worker thread (they hold no GIL) while DuckDB stores the current one, so
    on two cores the store, the build's largest part, hides the computation."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for symbols in batches:
            batch = _read_symbols(con, source, symbols)
            computing = pool.submit(
                _run, batch.bars, batch.starts, batch.zeros, batch.zeros, batch.states, batch.starts
            )
            if pending is not None:
                _store(con, table, state_table, *pending)
            pending = (batch, computing)
        if pending is not None:
            _store(con, table, state_table, *pending)


@dataclass
class _Batch:
    """Whole symbols' bars as read, ready for the kernels."""

    counts: list[tuple]  # (symbol, bars, fingerprint)
    bars: dict[str, np.ndarray]
    lengths: np.ndarray
    starts: np.ndarray
    zeros: np.ndarray
    states: np.ndarray


def _read_symbols(con: duckdb.DuckDBPyConnection, source: str, symbols: list[str]) -> _Batch:
    counts = _fingerprints(con, source, symbols)
    bars = _bars(
        con,
        f"SELECT {BARS} FROM {source} WHERE symbol IN (SELECT unnest(?::VARCHAR[])) ORDER BY symbol, ts",
        [symbols],
    )
    lengths = np.array([count for _, count, _ in counts], dtype=np.int64)
    return _Batch(
        counts=counts,
        bars=bars,
        lengths=lengths,
        starts=np.concatenate([[0], np.cumsum(lengths)]),
        zeros=np.zeros(len(counts), dtype=np.int64),
        states=np.full((len(counts), len(STATE_COLUMNS)), np.nan),
    )


def _store(
    con: duckdb.DuckDBPyConnection, table: str, state_table: str, batch: _Batch, computing: Future
) -> None:
    out = computing.result()
    _write(con, table, [s for s, *_ in batch.counts], batch.lengths, batch.bars["ts"], out)
    _write_state(
        con, state_table, batch.counts, batch.starts, batch.bars["ts"], batch.states, batch.lengths - 1
    )


def _continue_symbols(
    con: duckdb.DuckDBPyConnection, source: str, symbols: list[str], fingerprints: list[tuple]
) -> int:
    """Compute the new bars of ``symbols`` from their saved state and history; return the rows.
    ``fingerprints``: (symbol, bars, fingerprint) of all their bars now, from the update's plan."""
    saved = con.execute(
        f"SELECT symbol, n, ts, history_ts, {', '.join(STATE_COLUMNS)} FROM {STATE_TABLE} "
        "WHERE symbol IN (SELECT unnest(?::VARCHAR[])) ORDER BY symbol",
        [symbols],
    ).fetchall()
    tail = (
        f"FROM {source} AS src JOIN {STATE_TABLE} AS s USING (symbol) "
        "WHERE src.symbol IN (SELECT unnest(?::VARCHAR[])) AND src.ts >= s.history_ts"
    )  # the last HISTORY_BARS saved bars and the new ones
    segments = con.execute(
        f"SELECT src.symbol, count(*), count(*) FILTER (WHERE src.ts <= s.ts) {tail} "
        "GROUP BY src.symbol ORDER BY src.symbol",
        [symbols],
    ).fetchall()
    columns = ", ".join(f"src.{c}" for c in BARS.split(", "))
    bars = _bars(con, f"SELECT {columns} {tail} ORDER BY src.symbol, src.ts", [symbols])
    lengths = np.array([count for _, count, _ in segments], dtype=np.int64)
    history = np.array([old for _, _, old in segments], dtype=np.int64)
    last_n = np.array([n for _, n, *_ in saved], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    out_starts = np.concatenate([[0], np.cumsum(lengths - history)])
    states = np.array([row[4:] for row in saved], dtype=np.float64)
    first_n = last_n + 1 - history
    out = _run(bars, starts, first_n, history, states, out_starts)
    new_ts = np.concatenate(
        [bars["ts"][a + k : b] for a, b, k in zip(starts[:-1], starts[1:], history, strict=True)]
    )
    _write(con, TABLE, symbols, lengths - history, new_ts, out)
    con.execute(f"DELETE FROM {STATE_TABLE} WHERE symbol IN (SELECT unnest(?::VARCHAR[]))", [symbols])
    _write_state(con, STATE_TABLE, fingerprints, starts, bars["ts"], states, last_n + lengths - history)
    return int(out.shape[0])


def _fingerprints(con: duckdb.DuckDBPyConnection, source: str, symbols: list[str]) -> list[tuple]:
    """(symbol, bars, fingerprint) of each of ``symbols``, in symbol order."""
    return con.execute(
        f"SELECT symbol, count(*), {fingerprint()} FROM {source} "
        "WHERE symbol IN (SELECT unnest(?::VARCHAR[])) GROUP BY symbol ORDER BY symbol",
        [symbols],
    ).fetchall()


def _run(bars: dict, starts, first_n, out_from, states, out_starts) -> np.ndarray:
    """The kernels on a batch: [output rows, len(KERNEL_COLUMNS)], column-major for the writer."""
    out = np.empty((int(out_starts[-1]), len(KERNEL_COLUMNS)), order="F")
    columns = (np.asarray(bars[k], dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
    batch_features(*columns, starts, first_n, out_from, states, out_starts, out)
    return out


def _write(con: duckdb.DuckDBPyConnection, table: str, symbols: list[str], lengths, ts, out) -> None:
    """Append kernel output (NaN stored as NULL) with the calendar features."""
    codes = np.repeat(np.arange(len(symbols), dtype=np.int32), lengths)
    batch = pa.table(
        {
            "symbol": pa.DictionaryArray.from_arrays(codes, pa.array(symbols, pa.string())),
            "ts": pa.array(ts),
            **{name: pa.array(out[:, j], from_pandas=True) for j, name in enumerate(KERNEL_COLUMNS)},
        }
    )
    con.register("feature_batch", batch)
    try:
        con.execute(f"INSERT INTO {table} SELECT {SELECT_FEATURES} FROM feature_batch")
    finally:
        con.unregister("feature_batch")


def _write_state(con, state_table: str, counts, starts, ts, states, last_n) -> None:
    """Append each symbol's state at its last bar, and the fingerprint of its bars."""
    ends = np.asarray(starts[1:], dtype=np.int64)
    history = np.maximum(np.asarray(starts[:-1], dtype=np.int64), ends - HISTORY_BARS)
    rows = pa.table(
        {
            "symbol": pa.array([symbol for symbol, *_ in counts], pa.string()),
            "n": pa.array(np.asarray(last_n, dtype=np.int64)),
            "ts": pa.array(ts[ends - 1]),
            "history_ts": pa.array(ts[history]),
            "fingerprint": pa.array([fingerprint for *_, fingerprint in counts], pa.uint64()),
            **{name: pa.array(states[:, j]) for j, name in enumerate(STATE_COLUMNS)},
        }
    )
    con.register("state_batch", rows)
    try:
        con.execute(f"INSERT INTO {state_table} SELECT * FROM state_batch")
    finally:
        con.unregister("state_batch")
