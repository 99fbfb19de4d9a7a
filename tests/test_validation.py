"""Each validation rule quarantines the rows that break it; nothing is lost or repaired."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from hrm_core.core.config import ValidationConfig
from hrm_core.core.errors import DataError
from hrm_core.data.validation import validate_ohlcv
from hrm_core.data.warehouse import read_bars
from tests.conftest import warehouse_with


def with_lineage(bars: pd.DataFrame) -> pd.DataFrame:
    return bars.assign(source_file="test.csv", source_row=np.arange(1, len(bars) + 1))


@pytest.fixture
def bars(daily_bars):
    return with_lineage(daily_bars[daily_bars["symbol"] == "S0000"].head(300).reset_index(drop=True))


@pytest.mark.parametrize(
    ("rule", "breaks"),
    [
        ("ohlc_not_null", lambda b: b.assign(close=b["close"].where(b.index != 10))),
        ("prices_positive", lambda b: b.assign(low=b["low"].where(b.index != 11, -1.0))),
        ("high_ge_open_close", lambda b: b.assign(high=b["high"].where(b.index != 12, b["low"] * 0.5))),
        ("low_le_open_close", lambda b: b.assign(low=b["low"].where(b.index != 13, b["high"] * 2))),
        ("volume_non_negative", lambda b: b.assign(volume=b["volume"].where(b.index != 14, -5.0))),
        ("ts_strictly_increasing", lambda b: pd.concat([b, b.iloc[[15]]], ignore_index=True)),
    ],
)
def test_each_rule_quarantines_the_row_that_breaks_it(bars, rule, breaks):
    broken = breaks(bars.copy())
    report = validate_ohlcv(broken, ValidationConfig())
    counts = report.symbols["S0000"]
    assert counts.rows_in == len(broken)
    assert counts.rows_clean + counts.rows_quarantined == counts.rows_in
    assert counts.rows_quarantined == 1
    assert rule in report.quarantine["rules"].iloc[0]
    assert len(report.clean) == len(bars) - (0 if rule == "ts_strictly_increasing" else 1)


def test_high_below_low_names_both_rules_and_keeps_lineage(bars):
    broken = bars.copy()
    broken.loc[20, ["high", "low"]] = [broken.loc[20, "low"], broken.loc[20, "high"]]
    report = validate_ohlcv(broken, ValidationConfig())
    row = report.quarantine.iloc[0]
    assert {"high_ge_open_close", "low_le_open_close"} <= set(row["rules"])
    assert (row["source_file"], row["source_row"]) == ("test.csv", 21)


def test_unsorted_rows_are_put_in_time_order_and_kept(bars):
    shuffled = bars.sample(frac=1.0, random_state=0)
    report = validate_ohlcv(shuffled, ValidationConfig())
    assert report.symbols["S0000"].rows_quarantined == 0
    assert report.clean["ts"].is_monotonic_increasing


def test_quarantine_share_over_threshold_flags_the_symbol(bars):
    broken = bars.assign(close=bars["close"].where(bars.index % 50 != 0))  # 2 % of rows
    report = validate_ohlcv(broken, ValidationConfig())
    assert [r.symbol for r in report.failing_symbols(0.01)] == ["S0000"]
    assert report.failing_symbols(0.05) == []
    assert report.symbols["S0000"].examples[0]["rules"] == ["ohlc_not_null"]


def test_warnings_count_gaps_and_outliers_without_quarantining(bars):
    gappy = bars.drop(index=range(100, 110))
    gappy.loc[200, ["open", "high", "low", "close"]] *= 3.0
    report = validate_ohlcv(gappy, ValidationConfig(outlier_sigmas=5))
    warnings = report.symbols["S0000"].warnings
    assert warnings["bar_gaps"] == 1
    assert warnings["return_outliers"] >= 1
    assert report.symbols["S0000"].rows_quarantined == 0


def test_wrong_schema_is_a_data_error(bars):
    with pytest.raises(DataError, match="schema rule"):
        validate_ohlcv(bars.assign(close=bars["close"].astype(str)), ValidationConfig())


def test_warehouse_round_trip_keeps_utc(bars):
    con = warehouse_with(bars)
    back = read_bars(con, "clean.ohlcv", ["S0000"])
    assert back["ts"].equals(bars["ts"].astype(back["ts"].dtype))


def test_great_expectations_records_every_rule_and_must_agree_with_the_sql(bars, monkeypatch):
    from hrm_core.data import validation

    broken = bars.assign(volume=bars["volume"].where(bars.index != 14, -5.0))
    record = validate_ohlcv(broken, ValidationConfig()).expectations
    assert {e["rule"] for e in record} == {*validation.RULES, "bar_gaps", "return_outliers"}
    assert [e["unexpected"] for e in record if e["rule"] == "volume_non_negative"] == [1]
    index = next(i for i, c in enumerate(validation.ROW_CHECKS) if c.rule == "volume_non_negative")
    wrong = dataclasses.replace(validation.ROW_CHECKS[index], breaks="volume >= 0")  # a wrong SQL twin
    checks = (*validation.ROW_CHECKS[:index], wrong, *validation.ROW_CHECKS[index + 1 :])
    monkeypatch.setattr(validation, "ROW_CHECKS", checks)
    with pytest.raises(
        DataError, match="Great Expectations and the SQL rules disagree on volume_non_negative"
    ):
        validate_ohlcv(broken, ValidationConfig())
