"""Tolerant readers for real OHLCV exports (Yahoo CSVs, vendor parquet files, epoch columns).

Each reader returns the normalised frame ``symbol, ts, open, high, low, close, volume`` plus the
lineage columns. Readers parse and rename; they never drop or repair rows: a row with a bad value
keeps it (as null where the cell was a null token) so that validation can quarantine it by rule.
Problems that make a whole file unusable raise :class:`DataError` naming the file and the rule.
"""

from __future__ import annotations

import io
import re
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from hrm_core.core.errors import DataError
from hrm_core.data.schema import (
    EPOCH_ALIASES,
    IGNORED_COLUMNS,
    LINEAGE_COLUMNS,
    NULL_TOKENS,
    OHLCV_COLUMNS,
    PRICE_COLUMNS,
    SYMBOL_ALIASES,
    TIMESTAMP_ALIASES,
    normalise_column_name,
)

NUMBER_COLUMNS = frozenset({*PRICE_COLUMNS, "volume"})
"""Columns the CSV reader lets pandas' parser type as numbers; all others are read as text."""

EPOCH_MS_THRESHOLD = 1e11
SYMBOL_PATTERN = r"[A-Za-z0-9^][A-Za-z0-9._=^-]{0,31}"
"""Tickers as exchanges and vendors write them (BRK.B, ^GSPC, EURUSD=X, BTC-USD). Nothing else: a
symbol becomes a file name and a Dagster partition, so a slash, quote or space is refused."""
YEAR_2200_SECONDS = 7.26e9
"""Epochs past about 2200 are not dates; they become missing stamps, which validation quarantines."""
"""Epoch values above this are milliseconds: 1e11 seconds would be the year 5138."""


def read_ohlcv_bytes(payload: bytes, name: str) -> pd.DataFrame:
    """Read one CSV or parquet file given as bytes; ``name`` is its path or URI (for errors)."""
    suffix = PurePosixPath(name).suffix.lower()
    if not payload.strip():
        raise DataError(name, "file is empty", "0 data bytes")
    if suffix == ".csv":
        frame = _read_csv(payload, name)
    elif suffix in (".parquet", ".pq"):
        frame = _read_parquet(payload, name)
    else:
        raise DataError(name, "unsupported file type (use .csv or .parquet)", suffix or "no suffix")
    return normalise_frame(frame, name, default_symbol=PurePosixPath(name).stem)


def _read_csv(payload: bytes, name: str) -> pd.DataFrame:
    """Read a CSV: the number columns typed by pandas' parser, every other column as text.

    Reading every cell as text and converting the numbers afterwards takes three times as long as
    the parse itself on a large file, and for plain numbers the parser's conversion gives the same
    values. A file with a number column that is not plain numbers (padded, quoted or bad cells,
    ``True``, missing cells, huge values: see ``_plain_numbers``) is read again as text, as before.
    """
    try:
        header = _parse_csv(payload, nrows=0).columns
        text_columns = {c: str for c in header if normalise_column_name(c) not in NUMBER_COLUMNS}
        frame = _parse_csv(payload, dtype=text_columns)
        if not all(_plain_numbers(frame[c]) for c in frame.columns if c not in text_columns):
            frame = _parse_csv(payload, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(name, "not a readable CSV file", str(exc).splitlines()[0]) from exc
    return frame


def _parse_csv(payload: bytes, **options) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(payload), keep_default_na=False, na_values=list(NULL_TOKENS), **options)


def _plain_numbers(values: pd.Series) -> bool:
    """Whether the parser typed ``values`` as ``pd.to_numeric`` of their text does: numbers, none
    missing, all below 2**53 in magnitude. Where a column of integers has missing cells the parser
    converts the integers exactly and ``to_numeric`` parses every cell as a float: ``-0`` and
    integers beyond 2**53 come out differently. Rows with such values are quarantined anyway."""
    return values.dtype.kind in "iuf" and bool((values.abs() < 2**53).all())


def _read_parquet(payload: bytes, name: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(payload))
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(name, "not a readable parquet file", str(exc).splitlines()[0]) from exc
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    return frame


def normalise_frame(frame: pd.DataFrame, name: str, default_symbol: str) -> pd.DataFrame:
    """Rename, type and order the columns of one source file; see the module docstring."""
    frame = frame.rename(columns=normalise_column_name)
    if frame.columns.duplicated().any():
        duplicated = frame.columns[frame.columns.duplicated()][0]
        raise DataError(name, "duplicate column after normalising names", duplicated)
    if frame.empty:
        raise DataError(name, "file has a header but no data rows", ", ".join(frame.columns))

    ts_column = next((c for c in TIMESTAMP_ALIASES if c in frame.columns), None)
    epoch_column = next((c for c in EPOCH_ALIASES if c in frame.columns), None)
    symbol_column = next((c for c in SYMBOL_ALIASES if c in frame.columns), None)
    known = {*PRICE_COLUMNS, "volume", ts_column, epoch_column, symbol_column}
    missing = [c for c in (*PRICE_COLUMNS, "volume") if c not in frame.columns]
    if ts_column is None and epoch_column is None:
        missing.insert(0, "date/ts/timestamp or datetime_epoch")
    if missing:
        raise DataError(name, "missing required columns", f"missing {missing}; found {list(frame.columns)}")
    unknown = [c for c in frame.columns if c not in known and c not in IGNORED_COLUMNS]
    if unknown:
        raise DataError(
            name,
            "unknown columns (expected date/ts, open, high, low, close, volume[, symbol])",
            f"{unknown}",
        )

    out = pd.DataFrame(index=frame.index)
    if symbol_column is not None:
        symbols = frame[symbol_column].astype("string").str.strip()
        out["symbol"] = symbols.fillna(default_symbol).replace("", default_symbol)
    else:
        out["symbol"] = default_symbol
    out["ts"] = (
        _parse_epoch(frame[epoch_column], name, epoch_column)
        if ts_column is None
        else _parse_timestamps(frame[ts_column], name, ts_column)
    )
    for column in (*PRICE_COLUMNS, "volume"):
        out[column] = _parse_numbers(frame[column], name, column)
    out["source_file"] = name
    out["source_row"] = np.arange(1, len(frame) + 1, dtype="int64")
    out["symbol"] = out["symbol"].astype(str)
    invalid = [s for s in out["symbol"].unique() if not re.fullmatch(SYMBOL_PATTERN, s)]  # each symbol once
    if invalid:
        raise DataError(
            name,
            f"symbol names must match {SYMBOL_PATTERN} (letters, digits, . _ - ^ =; they name files "
            "and partitions)",
            _example(out["symbol"], out["symbol"].isin(invalid)),
        )
    assert list(out.columns) == [*OHLCV_COLUMNS, *LINEAGE_COLUMNS]  # added in this order: no selection
    out.index = pd.RangeIndex(len(out))  # as reset_index(drop=True) would, without copying every column
    return out


def _example(values: pd.Series, mask: pd.Series | np.ndarray) -> str:
    position = int(np.flatnonzero(np.asarray(mask))[0])
    return f"row {position + 1}: {values.iloc[position]!r}"


def _parse_numbers(values: pd.Series, name: str, column: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    parsed = pd.to_numeric(values, errors="coerce")  # fast path: plain numbers, as most files have
    if (parsed.isna() & values.notna()).any():  # padded or quoted cells: strip, then parse again
        parsed = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise DataError(name, f"column '{column}' must be numeric", _example(values, bad))
    return parsed.astype("float64")


def _parse_epoch(values: pd.Series, name: str, column: str) -> pd.Series:
    numbers = _parse_numbers(values, name, column)
    if numbers.isna().all():
        raise DataError(name, f"column '{column}' has no epoch values", _example(values, numbers.isna()))
    unit = "ms" if numbers.abs().median() > EPOCH_MS_THRESHOLD else "s"  # one wild value cannot flip it
    seconds = numbers / (1000.0 if unit == "ms" else 1.0)
    representable = seconds.abs() < YEAR_2200_SECONDS  # beyond: missing, quarantined by the ts rule
    # only representable numbers go through pandas' unit conversion: fed NaN beside a wild value
    # it has raised numpy's FloatingPointError from inside (seen once in the fuzz test under xdist)
    stamps = pd.Series(pd.NaT, index=numbers.index, dtype="datetime64[ns, UTC]")
    stamps[representable] = pd.to_datetime(numbers[representable], unit=unit, utc=True)
    return stamps


ZONE_SUFFIX = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")
"""How a zoned stamp ends: Z, +hh:mm or +hhmm."""


def _has_zone(stamp: object) -> bool:
    """Whether a stripped stamp ends in a zone. The suffix is at most 6 characters long, so the
    search starts there: searching the whole stamp takes twice as long on a large file."""
    return isinstance(stamp, str) and ZONE_SUFFIX.search(stamp, len(stamp) - 6) is not None


def _parse_timestamps(values: pd.Series, name: str, column: str) -> pd.Series:
    """Parse timestamps to UTC. Naive stamps are taken as UTC; a file mixing naive and zoned is refused."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC")
    text = values.astype("string").str.strip()
    present = text.notna().to_numpy()
    zoned = np.array([_has_zone(stamp) for stamp in text.to_numpy()], dtype=bool)
    if (zoned & present).any() and (~zoned & present).any():
        raise DataError(
            name,
            f"column '{column}' mixes time-zone-aware and naive timestamps",
            f"{_example(values, zoned & present)} vs {_example(values, ~zoned & present)}",
        )
    try:
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    except (ValueError, TypeError):
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy() & present
    if bad.any():  # a stamp beyond pandas' range (year 2600) is no error: validation quarantines it
        beyond_pandas = text[bad].str.match(r"^\s*\d{4,}-\d\d-\d\d").fillna(False).to_numpy(dtype=bool)
        bad[bad] = ~beyond_pandas
    if bad.any():
        raise DataError(
            name, f"column '{column}' has unparseable timestamps (use ISO 8601)", _example(values, bad)
        )
    return parsed
