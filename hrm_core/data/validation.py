"""OHLCV validation: the rules as DuckDB SQL over the whole batch, Great Expectations once as the record.

Each blocking row rule is written twice in ``ROW_CHECKS``: as the Great Expectations expectation
that the asset's record shows, and as the SQL condition that is true on the rows breaking it. One
DuckDB query evaluates every condition on every row of every symbol at once (a boolean column per
rule, the list of broken rule names per row, ``lag() OVER (PARTITION BY symbol ...)`` for the
ordering rule) and the warnings by window functions and ``GROUP BY``. Great Expectations then
validates the same rows in one pass, and its unexpected count for every expectation must equal
the SQL's or validation stops: two implementations of each rule checked against each other on
every row. Run per symbol, Great Expectations' fixed cost per run (not the rows) made validation of
1,000 symbols take minutes; one run over the batch takes about a second.

A row that breaks any rule goes to quarantine with the names of the rules it broke; every other
row is clean. Nothing is dropped or repaired, so ``rows_in == rows_clean + rows_quarantined``
always holds (and is asserted). The warnings only count: gaps in the bar frequency and return
outliers, over each symbol's clean rows. Rows are put in time order per symbol first (a stable
order, missing stamps last): row order in a file carries no information, while a repeated
timestamp does, and the strictly-increasing rule catches it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hrm_core.core.config import ValidationConfig
from hrm_core.core.errors import DataError
from hrm_core.data.schema import LINEAGE_COLUMNS, OHLCV_COLUMNS, PRICE_COLUMNS

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
import great_expectations as gx
from great_expectations.data_context.types.base import ProgressBarsConfig

ge = gx.expectations

MAX_PRICE = 1e9
"""No traded price is a billion per unit; a larger one is a unit or parsing error (or inf)."""
MAX_VOLUME = 1e15
TS_RANGE = (pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2200-12-31 23:59:59", tz="UTC"))
"""Bars outside these dates are typos or sentinels; the readers turn stamps they cannot represent
(year 2600, an epoch of 1e20) into missing ones, which this rule quarantines with the others."""


@dataclass(frozen=True)
class RowCheck:
    """One expectation of a blocking rule and the same test in SQL: ``breaks`` is true on the rows
    that break it. In the SQL ``ts`` and ``previous_ts`` are ticks of the stamps' unit."""

    rule: str
    expectation: gx.expectations.Expectation
    breaks: str


def _missing(column: str) -> str:
    """Missing as Great Expectations' pandas engine sees it: null or NaN. DuckDB orders NaN above
    every number, so a comparison alone would call a NaN price larger than any limit."""
    return f"({column} IS NULL OR isnan({column}))"


def _not_null(rule: str, column: str) -> RowCheck:
    return RowCheck(rule, ge.ExpectColumnValuesToNotBeNull(column=column), _missing(column))


def _positive(column: str) -> RowCheck:
    expectation = ge.ExpectColumnValuesToBeBetween(column=column, min_value=0, strict_min=True)
    return RowCheck("prices_positive", expectation, f"NOT {_missing(column)} AND {column} <= 0")


def _at_most(column: str, limit: float) -> RowCheck:
    expectation = ge.ExpectColumnValuesToBeBetween(column=column, max_value=limit)
    return RowCheck("values_finite_and_sane", expectation, f"NOT {_missing(column)} AND {column} > {limit!r}")


def _at_least(rule: str, larger: str, smaller: str) -> RowCheck:
    expectation = ge.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=larger, column_B=smaller, or_equal=True, ignore_row_if="either_value_is_missing"
    )
    present = f"NOT {_missing(larger)} AND NOT {_missing(smaller)}"
    return RowCheck(rule, expectation, f"{present} AND {larger} < {smaller}")


ROW_CHECKS: tuple[RowCheck, ...] = (
    _not_null("ts_present_in_1900_2200", "ts"),
    RowCheck(
        "ts_present_in_1900_2200",
        ge.ExpectColumnValuesToBeBetween(column="ts", min_value=TS_RANGE[0], max_value=TS_RANGE[1]),
        "ts < $ts_min OR ts > $ts_max",
    ),
    *(_not_null("ohlc_not_null", c) for c in PRICE_COLUMNS),
    *(_positive(c) for c in PRICE_COLUMNS),
    *(_at_most(c, MAX_PRICE) for c in PRICE_COLUMNS),
    _at_most("volume", MAX_VOLUME),
    _not_null("volume_not_null", "volume"),
    *(_at_least("high_ge_open_close", "high", c) for c in ("open", "close")),
    *(_at_least("low_le_open_close", c, "low") for c in ("open", "close")),
    RowCheck(
        "volume_non_negative",
        ge.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
        f"NOT {_missing('volume')} AND volume < 0",
    ),
    RowCheck(  # the previous stamp of the same symbol in time order; null on its first row
        "ts_strictly_increasing",
        ge.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="ts", column_B="previous_ts", or_equal=False, ignore_row_if="either_value_is_missing"
        ),
        "ts <= previous_ts",
    ),
)
"""The blocking row rules: each expectation with its SQL twin, in the order rules are reported."""
RULES = tuple(dict.fromkeys(check.rule for check in ROW_CHECKS))
for _index, _check in enumerate(ROW_CHECKS):
    _check.expectation.meta = {"rule": _check.rule, "check": _index}  # names a result's rule and SQL twin

NUMERIC_TYPES = ["float64", "Float64", "int64", "Int64"]
SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
"""Ticks per second of each unit pandas stores timestamps in (readers give ns, DuckDB us)."""


@dataclass
class SymbolReport:
    """Counts and examples for one symbol, shown in Dagster metadata."""

    symbol: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    rule_counts: dict[str, int]
    warnings: dict[str, int]
    examples: list[dict] = field(default_factory=list)

    @property
    def quarantine_share(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0


@dataclass
class ValidationReport:
    """The result of validating a batch of bars: clean rows, quarantined rows, per-symbol reports
    and Great Expectations' record of the batch (per expectation: its rule and unexpected rows)."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    symbols: dict[str, SymbolReport]
    expectations: list[dict] = field(default_factory=list)

    def failing_symbols(self, max_share: float) -> list[SymbolReport]:
        """Symbols whose quarantined share exceeds ``max_share``: they block downstream assets."""
        return [r for r in self.symbols.values() if r.quarantine_share > max_share]


@cache
def _batch_definition():
    """One ephemeral GX context per process, with a batch definition that takes a DataFrame."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("ohlcv").add_dataframe_asset("bars")
    return asset.add_batch_definition_whole_dataframe("batch")


def _suite(name: str, expectations: list) -> gx.ExpectationSuite:
    _batch_definition()  # suites need an active context
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def _run(suite: gx.ExpectationSuite, frame: pd.DataFrame, result_format: str = "COMPLETE"):
    """Validate ``frame`` with ``suite``, with pandas' copy-on-write on.

    For each expectation GE's pandas engine filters the batch (its non-null rows, the rows where
    both columns of a pair are present); without copy-on-write each filter copies the whole batch
    even when it keeps every row. The results are the same: GE only reads the frames.
    """
    with pd.option_context("mode.copy_on_write", True):
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(suite, result_format=result_format)


def check_schema(frame: pd.DataFrame, name: str) -> None:
    """Raise :class:`DataError` unless ``frame`` has the OHLCV columns with numeric prices."""
    present = [c for c in (*PRICE_COLUMNS, "volume") if c in frame.columns]
    suite = _suite(
        "ohlcv_schema",
        [ge.ExpectTableColumnsToMatchSet(column_set=list(OHLCV_COLUMNS), exact_match=False)]
        + [ge.ExpectColumnValuesToBeInTypeList(column=c, type_list=NUMERIC_TYPES) for c in present],
    )
    result = _run(suite, frame.head(1000))
    if not result.success:
        failed = next(r for r in result.results if not r.success)
        observed = failed.result.get("observed_value", failed.result.get("details"))
        raise DataError(
            name,
            f"schema rule {failed.expectation_config.type} failed",
            f"{failed.expectation_config.kwargs} observed {observed}",
        )


def _rule_column(rule: str) -> str:
    return f'"{rule}"'


def _checks_sql() -> str:
    """The query behind :func:`_checked`: every check, rule, rule list and warning input per row."""
    checks = ",\n".join(f"coalesce({c.breaks}, false) AS check_{i}" for i, c in enumerate(ROW_CHECKS))
    rules = ",\n".join(
        " OR ".join(f"check_{i}" for i, c in enumerate(ROW_CHECKS) if c.rule == rule)
        + f" AS {_rule_column(rule)}"
        for rule in RULES
    )
    names = ", ".join(
        f"CASE WHEN {_rule_column(rule)} THEN ['{rule}'] ELSE []::VARCHAR[] END" for rule in RULES
    )
    broken = " OR ".join(_rule_column(rule) for rule in RULES)
    return f"""
    WITH ordered AS (
        SELECT *, lag(ts) OVER (PARTITION BY symbol_id ORDER BY ts NULLS LAST, pos) AS previous_ts
        FROM bars
    ), checked AS (
        SELECT pos, symbol_id, ts, previous_ts, ts_s, log_close, {checks} FROM ordered
    ), ruled AS (
        SELECT *, {rules} FROM checked
    ), flagged AS (
        SELECT *, {broken} AS broken FROM ruled
    ), steps AS (  -- the warnings look at each symbol's clean rows in time order
        SELECT pos, symbol_id,
            ts_s - lag(ts_s) OVER w AS interval_s,
            log_close - lag(log_close) OVER w AS log_return
        FROM flagged WHERE NOT broken
        WINDOW w AS (PARTITION BY symbol_id ORDER BY ts, pos)
    ), centre AS (
        SELECT symbol_id, $gap_factor * median(interval_s) AS max_interval_s,
            avg(log_return) AS mean_return, count(log_return) AS returns
        FROM steps GROUP BY symbol_id
    ), spread AS (  -- the sample standard deviation in two passes, as pandas computes it
        SELECT symbol_id, sqrt(sum((log_return - mean_return) ** 2) / (any_value(returns) - 1)::DOUBLE) AS std
        FROM steps JOIN centre USING (symbol_id) GROUP BY symbol_id
    ), scored AS (
        SELECT pos, interval_s, max_interval_s, (log_return - mean_return) / std AS return_z
        FROM steps JOIN centre USING (symbol_id) JOIN spread USING (symbol_id)
    )
    SELECT flagged.* EXCLUDE (ts_s, log_close), interval_s, max_interval_s, return_z,
        CASE WHEN broken THEN flatten([{names}]) END AS rules
    FROM flagged LEFT JOIN scored USING (pos)
    ORDER BY symbol_id, ts NULLS LAST, pos
    """


def _count(condition: str) -> str:
    """The rows of a group where ``condition`` is true (null is not true; none is 0, not null)."""
    return f"count(*) FILTER (WHERE {condition})"


def _summary_sql(config: ValidationConfig) -> str:
    """Per symbol: rows, quarantined rows, rows per rule, rows per check and the warnings."""
    outside = f"NOT isnan(return_z) AND abs(return_z) > {float(config.outlier_sigmas)!r}"
    counts = ", ".join(
        [
            *(f"{_count(_rule_column(rule))} AS {_rule_column(rule)}" for rule in RULES),
            *(f"{_count(f'check_{i}')} AS check_{i}" for i in range(len(ROW_CHECKS))),
        ]
    )
    return f"""
    SELECT symbol_id, count(*) AS rows_in, {_count("broken")} AS rows_quarantined, {counts},
        {_count("interval_s > max_interval_s")} AS bar_gaps, {_count(outside)} AS return_outliers
    FROM checked GROUP BY symbol_id ORDER BY symbol_id
    """


def _ticks(ts: pd.Series) -> tuple[np.ndarray, np.ndarray, str]:
    """The stamps as integer ticks of their unit, which stamps are missing, and the unit."""
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise DataError("raw.ohlcv", "column 'ts' must hold timestamps", f"dtype {ts.dtype}")
    values = ts.array
    return values.asi8, np.asarray(values.isna()), values.unit


def _float(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _checked(
    con: duckdb.DuckDBPyConnection, bars: pd.DataFrame, symbol_ids: np.ndarray, config: ValidationConfig
) -> pa.Table:
    """Every row of ``bars`` with its checks, rules and warning inputs, in order: by symbol, time
    (missing last) and position in ``bars`` (a stable sort).

    The SQL reads the stamps as integer ticks of their unit (null where missing) and as whole
    seconds (floored, as the gap warning counts them), and the log close computed here by numpy,
    as the return warning always did (only clean rows' positive closes are read)."""
    ticks, missing, unit = _ticks(bars["ts"])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_close = np.log(_float(bars["close"]))
    table = pa.table(
        {
            "pos": pa.array(np.arange(len(bars), dtype="int64")),
            "symbol_id": pa.array(symbol_ids),
            "ts": pa.array(ticks, mask=missing),
            "ts_s": pa.array(ticks // SECOND[unit], mask=missing),
            **{c: pa.array(_float(bars[c])) for c in (*PRICE_COLUMNS, "volume")},
            "log_close": pa.array(log_close),
        }
    )
    con.register("bars", table)
    ts_min, ts_max = (t.value // (SECOND["ns"] // SECOND[unit]) for t in TS_RANGE)
    parameters = {"ts_min": ts_min, "ts_max": ts_max, "gap_factor": float(config.gap_factor)}
    return con.sql(_checks_sql(), params=parameters).to_arrow_table()


def _record(bars: pd.DataFrame, rows: pa.Table) -> pd.DataFrame:
    """The batch Great Expectations validates: the rules' columns in the SQL's row order, with the
    previous stamp of each row's symbol and the warnings' inputs (missing where they do not apply)."""
    order = rows["pos"].to_numpy()
    with pd.option_context("mode.copy_on_write", True):
        frame = bars[["ts", *PRICE_COLUMNS, "volume"]].take(order).reset_index(drop=True)
        ticks = pc.fill_null(rows["previous_ts"], np.iinfo("int64").min).to_numpy()  # the min is NaT
        stamps = pd.Series(ticks.view(f"M8[{frame['ts'].array.unit}]"))
        frame["previous_ts"] = stamps.dt.tz_localize(frame["ts"].dt.tz) if frame["ts"].dt.tz else stamps
        for column in ("interval_s", "max_interval_s", "return_z"):
            frame[column] = rows[column].to_numpy(zero_copy_only=False).astype("float64")
    return frame


def _warning_expectations(config: ValidationConfig) -> list:
    """The warnings as expectations on the record's columns, so that its counts are GE's too."""
    gaps = ge.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A="max_interval_s",
        column_B="interval_s",
        or_equal=True,
        ignore_row_if="either_value_is_missing",
    )
    outliers = ge.ExpectColumnValuesToBeBetween(
        column="return_z", min_value=-config.outlier_sigmas, max_value=config.outlier_sigmas
    )
    gaps.meta, outliers.meta = {"warning": "bar_gaps"}, {"warning": "return_outliers"}
    return [gaps, outliers]


def _validate_record(record: pd.DataFrame, summary: pd.DataFrame, config: ValidationConfig) -> list[dict]:
    """Great Expectations over the whole batch once; every expectation's unexpected count must be
    the SQL's. Returns the record: per expectation its rule (or warning), type, columns and count."""
    suite = _suite("ohlcv_batch", [c.expectation for c in ROW_CHECKS] + _warning_expectations(config))
    entries = []
    for item in _run(suite, record, result_format="BASIC").results:
        expectation = item.expectation_config
        if item.exception_info and item.exception_info.get("raised_exception"):
            raise DataError(
                "validation",
                f"expectation {expectation.type} could not run",
                item.exception_info.get("exception_message", ""),
            )
        meta = expectation.meta
        name = meta.get("rule") or meta["warning"]
        sql = int(summary[f"check_{meta['check']}" if "rule" in meta else meta["warning"]].sum())
        found = int(item.result.get("unexpected_count") or 0)
        if found != sql:
            raise DataError(
                "validation",
                f"Great Expectations and the SQL rules disagree on {name} ({expectation.type})",
                f"{expectation.kwargs}: GE {found} rows, SQL {sql}; GE's first "
                f"{item.result.get('partial_unexpected_list')}",
            )
        columns = [v for k, v in expectation.kwargs.items() if k.startswith("column") and isinstance(v, str)]
        entries.append(
            {"rule": name, "expectation": expectation.type, "columns": columns, "unexpected": found}
        )
    return sorted(entries, key=lambda e: [*RULES, "bar_gaps", "return_outliers"].index(e["rule"]))


def _printable(value: object) -> object:
    """Non-finite floats as text, so that examples stay valid JSON in Dagster's metadata."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def _examples(quarantined: pd.DataFrame) -> dict[str, list[dict]]:
    """Each symbol's first five quarantined rows (every column, stamps as text)."""
    heads = quarantined.groupby("symbol", sort=False).head(5)
    records = heads.assign(ts=heads["ts"].astype(str)).to_dict("records")
    examples: dict[str, list[dict]] = {}
    for row in records:
        examples.setdefault(str(row["symbol"]), []).append({k: _printable(v) for k, v in row.items()})
    return examples


def validate_ohlcv(bars: pd.DataFrame, config: ValidationConfig) -> ValidationReport:
    """Split raw bars into clean and quarantined rows, per symbol, in one pass over the batch."""
    check_schema(bars, "raw.ohlcv")
    if bars.empty:
        return ValidationReport(
            clean=bars.iloc[:0][list(OHLCV_COLUMNS)], quarantine=bars.iloc[:0].assign(rules=[]), symbols={}
        )
    if bars["symbol"].isna().any():
        missing = int(np.argmax(bars["symbol"].isna()))
        raise DataError(
            "raw.ohlcv", "every row needs a symbol", f"row {missing}: {bars.iloc[missing].to_dict()}"
        )
    symbol_ids, symbols = pd.factorize(bars["symbol"], sort=True)
    with duckdb.connect() as con:
        rows = _checked(con, bars, symbol_ids.astype("int32"), config)
        con.register("checked", rows)
        summary = con.execute(_summary_sql(config)).df()
    order, broken = rows["pos"].to_numpy(), rows["broken"].to_numpy(zero_copy_only=False)
    expectations = _validate_record(_record(bars, rows), summary, config)
    rules = rows["rules"].filter(rows["broken"]).to_pylist()
    quarantined = bars.take(order[broken]).reset_index(drop=True).assign(rules=rules)
    clean = bars[list(OHLCV_COLUMNS)].take(order[~broken]).reset_index(drop=True)
    assert len(clean) + len(quarantined) == len(bars), "validation lost rows"
    examples = _examples(quarantined)
    reports = {}
    for symbol, counts in zip(symbols, summary.to_dict("records"), strict=True):
        name = str(symbol)
        reports[name] = SymbolReport(
            symbol=name,
            rows_in=counts["rows_in"],
            rows_clean=counts["rows_in"] - counts["rows_quarantined"],
            rows_quarantined=counts["rows_quarantined"],
            rule_counts={rule: counts[rule] for rule in RULES if counts[rule]},
            warnings={"bar_gaps": counts["bar_gaps"], "return_outliers": counts["return_outliers"]},
            examples=examples.get(name, []),
        )
    return ValidationReport(
        clean=clean,
        quarantine=quarantined[[*OHLCV_COLUMNS, *LINEAGE_COLUMNS, "rules"]],
        symbols=reports,
        expectations=expectations,
    )
