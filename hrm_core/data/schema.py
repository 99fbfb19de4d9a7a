"""The one OHLCV schema every source is normalised to, and the column names it accepts."""

from __future__ import annotations

import re

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = ("symbol", "ts", *PRICE_COLUMNS, "volume")
"""Columns of ``raw.ohlcv`` and ``clean.ohlcv``, in order. ``ts`` is a UTC timestamp."""

LINEAGE_COLUMNS = ("source_file", "source_row")
"""Where each raw row came from, kept so a quarantined row can be traced to its file line."""

TIMESTAMP_ALIASES = ("ts", "date", "datetime", "timestamp", "time", "date_time")
EPOCH_ALIASES = ("datetime_epoch", "epoch", "unix", "unix_time", "timestamp_epoch")
SYMBOL_ALIASES = ("symbol", "ticker")
COLUMN_ALIASES = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vol": "volume"}

IGNORED_COLUMNS = frozenset(
    {
        "adj_close",
        "adjclose",
        "dividends",
        "stock_splits",
        "capital_gains",
        "vwap",
        "trades",
        "count",
        "turnover",
        "unnamed:_0",
        "index",
    }
)
"""Columns real exports carry that the pipeline does not use; anything else unknown is an error."""

NULL_TOKENS = ("null", "NULL", "Null", "None", "NaN", "nan", "NA", "N/A", "")


def normalise_column_name(name: object) -> str:
    """Lower-case, trim and snake-case a header so that 'Adj Close' and 'adj_close' agree."""
    text = re.sub(r"\s+", "_", str(name).strip().lower())
    return COLUMN_ALIASES.get(text, text)
