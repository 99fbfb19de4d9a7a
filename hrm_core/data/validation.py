"""OHLCV validation with Great Expectations suites defined in code.

Two suites run per symbol. ``ohlcv_rows`` holds the blocking row rules: a row that breaks any of
them goes to quarantine with the names of the rules it broke; every other row is clean. Nothing is
dropped or repaired, so ``rows_in == rows_clean + rows_quarantined`` always holds (and is
asserted). ``ohlcv_warnings`` holds rules that only warn: gaps in the bar frequency and return
outliers. Rows are put in time order first: row order in a file carries no information, while a
repeated timestamp does, and it is caught by the strictly-increasing rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd

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

ROW_RULES: dict[str, list] = {
    "ts_present_in_1900_2200": [
        ge.ExpectColumnValuesToNotBeNull(column="ts"),
        ge.ExpectColumnValuesToBeBetween(column="ts", min_value=TS_RANGE[0], max_value=TS_RANGE[1]),
    ],
    "ohlc_not_null": [ge.ExpectColumnValuesToNotBeNull(column=c) for c in PRICE_COLUMNS],
    "prices_positive": [
        ge.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True) for c in PRICE_COLUMNS
    ],
    "values_finite_and_sane": [
        *(ge.ExpectColumnValuesToBeBetween(column=c, max_value=MAX_PRICE) for c in PRICE_COLUMNS),
        ge.ExpectColumnValuesToBeBetween(column="volume", max_value=MAX_VOLUME),
    ],
    "volume_not_null": [ge.ExpectColumnValuesToNotBeNull(column="volume")],
    "high_ge_open_close": [
        ge.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="high", column_B=c, or_equal=True, ignore_row_if="either_value_is_missing"
        )
        for c in ("open", "close")
    ],
    "low_le_open_close": [
        ge.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=c, column_B="low", or_equal=True, ignore_row_if="either_value_is_missing"
        )
        for c in ("open", "close")
    ],
    "volume_non_negative": [ge.ExpectColumnValuesToBeBetween(column="volume", min_value=0)],
    "ts_strictly_increasing": [ge.ExpectColumnValuesToBeIncreasing(column="ts", strictly=True)],
}
"""Blocking row rules: rule name -> the expectations that implement it."""
for _rule, _expectations in ROW_RULES.items():
    for _expectation in _expectations:
        _expectation.meta = {"rule": _rule}  # lets a validation result name its rule

NUMERIC_TYPES = ["float64", "Float64", "int64", "Int64"]


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
    """The result of validating a batch of bars: clean rows, quarantined rows and per-symbol reports."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    symbols: dict[str, SymbolReport]

    def failing_symbols(self, max_share: float) -> list[SymbolReport]:
        """Symbols whose quarantined share exceeds ``max_share``: they block downstream assets."""
        return [r for r in self.symbols.values() if r.quarantine_share > max_share]


@cache
def _batch_definition():
    """One ephemeral GX context per process, with a batch definition that takes a DataFrame."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("ohlcv").add_dataframe_asset("bars")
    return asset.add_batch_definition_whole_dataframe("symbol_batch")


def _suite(name: str, expectations: list) -> gx.ExpectationSuite:
    _batch_definition()  # suites need an active context
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


@cache
def _row_suite() -> gx.ExpectationSuite:
    return _suite("ohlcv_rows", [e for expectations in ROW_RULES.values() for e in expectations])


def _run(suite: gx.ExpectationSuite, frame: pd.DataFrame, columns: list[str] | None = None):
    """Validate ``frame`` (only ``columns`` if given) with ``suite``, with pandas' copy-on-write on.

    For each expectation GE's pandas engine filters the batch (its non-null rows, the rows where
    both columns of a pair are present); without copy-on-write each filter copies the whole batch
    even when it keeps every row, which was most of the validation time of a large file. The
    results are the same: GE only reads the frames.
    """
    with pd.option_context("mode.copy_on_write", True):
        data = frame if columns is None else frame[columns]  # a view, under copy-on-write
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": data})
        return batch.validate(suite, result_format="COMPLETE")


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


def _rule_masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Evaluate the row suite; return, per rule, a boolean mask of the rows that break it."""
    masks = {rule: np.zeros(len(frame), dtype=bool) for rule in ROW_RULES}
    # only the columns the rules read: GE fingerprints every column of a batch (slow for text)
    for item in _run(_row_suite(), frame, ["ts", *PRICE_COLUMNS, "volume"]).results:
        if item.exception_info and item.exception_info.get("raised_exception"):
            raise DataError(
                "validation",
                f"expectation {item.expectation_config.type} could not run",
                item.exception_info.get("exception_message", ""),
            )
        unexpected = item.result.get("unexpected_index_list") or []
        masks[item.expectation_config.meta["rule"]][np.asarray(unexpected, dtype=int)] = True
    return masks


def _warnings(frame: pd.DataFrame, config: ValidationConfig) -> dict[str, int]:
    """Non-blocking rules: bar gaps longer than ``gap_factor`` × the median interval, return outliers."""
    ts = frame["ts"].astype("int64") // 10**9
    interval = ts.diff()
    log_return = np.log(frame["close"]).diff()
    z = (log_return - log_return.mean()) / log_return.std()
    checks = pd.DataFrame({"interval_s": interval, "return_z": z}).iloc[1:].reset_index(drop=True)
    if checks.empty:
        return {"bar_gaps": 0, "return_outliers": 0}
    suite = _suite(
        "ohlcv_warnings",
        [
            ge.ExpectColumnValuesToBeBetween(
                column="interval_s", max_value=float(config.gap_factor * interval.median())
            ),
            ge.ExpectColumnValuesToBeBetween(
                column="return_z", min_value=-config.outlier_sigmas, max_value=config.outlier_sigmas
            ),
        ],
    )
    result = _run(suite, checks)
    counts = [int(r.result.get("unexpected_count") or 0) for r in result.results]
    return {"bar_gaps": counts[0], "return_outliers": counts[1]}


def _printable(value: object) -> object:
    """Non-finite floats as text, so that examples stay valid JSON in Dagster's metadata."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def _in_time_order(group: pd.DataFrame) -> pd.DataFrame:
    """One symbol's rows in time order, numbered from 0 (GE reports rows by index). The sort is
    stable, so rows with equal stamps keep their file order; missing stamps go last. Most files
    are in time order already, and then the rows are only renumbered: sorting would copy them."""
    if group["ts"].is_monotonic_increasing:  # (False where a stamp is missing)
        frame = group.copy(deep=False)
    else:
        frame = group.sort_values("ts", kind="stable", na_position="last")
    frame.index = pd.RangeIndex(len(frame))
    return frame


def validate_ohlcv(bars: pd.DataFrame, config: ValidationConfig) -> ValidationReport:
    """Split raw bars into clean and quarantined rows, symbol by symbol."""
    check_schema(bars, "raw.ohlcv")
    clean_parts, quarantine_parts, reports = [], [], {}
    for symbol, group in bars.groupby("symbol", sort=True):
        frame = _in_time_order(group)
        masks = _rule_masks(frame)
        broken = np.zeros(len(frame), dtype=bool)
        for mask in masks.values():
            broken |= mask
        rules = [[rule for rule, mask in masks.items() if mask[i]] for i in np.flatnonzero(broken)]
        quarantined = frame.loc[broken].assign(rules=rules)
        clean = frame.loc[~broken, list(OHLCV_COLUMNS)]
        assert len(clean) + len(quarantined) == len(frame), "validation lost rows"
        examples = [
            {k: _printable(v) for k, v in row.items()}
            for row in quarantined.head(5).assign(ts=lambda f: f["ts"].astype(str)).to_dict("records")
        ]
        reports[str(symbol)] = SymbolReport(
            symbol=str(symbol),
            rows_in=len(frame),
            rows_clean=len(clean),
            rows_quarantined=len(quarantined),
            rule_counts={rule: int(mask.sum()) for rule, mask in masks.items() if mask.any()},
            warnings=_warnings(clean, config),
            examples=examples,
        )
        clean_parts.append(clean)
        quarantine_parts.append(quarantined[[*OHLCV_COLUMNS, *LINEAGE_COLUMNS, "rules"]])
    return ValidationReport(
        clean=pd.concat(clean_parts, ignore_index=True)
        if clean_parts
        else bars.iloc[:0][list(OHLCV_COLUMNS)],
        quarantine=pd.concat(quarantine_parts, ignore_index=True)
        if quarantine_parts
        else bars.iloc[:0].assign(rules=[]),
        symbols=reports,
    )
