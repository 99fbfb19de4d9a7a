"""Features: the registry matches the table, TA-Lib agreement, finiteness and point-in-time."""

import duckdb
import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hrm_core.core.feature_registry import FEATURES, INDICATORS, model_features
from hrm_core.features.build import build_features, update_features
from hrm_core.features.kernels import RESET
from hrm_core.features.quality import nonfinite_counts, point_in_time_difference
from tests.conftest import warehouse_with

REQUIRED_TALIB_COLUMNS = {
    "h_sma_50",
    "h_sma_100",
    "h_sma_200",
    "h_atr_20",
    "l_rsi_14",
    "l_ema_12",
    "l_ema_26",
    "l_macd",
    "l_macd_signal",
    "l_macd_hist",
    "l_bbands_upper_20",
    "l_bbands_middle_20",
    "l_bbands_lower_20",
    "l_mom_5",
}


def talib_reference(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    c, h, lo = (bars[k].to_numpy(dtype=float) for k in ("close", "high", "low"))
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2)
    return {
        "h_sma_50": talib.SMA(c, 50),
        "h_sma_100": talib.SMA(c, 100),
        "h_sma_200": talib.SMA(c, 200),
        "h_atr_20": talib.ATR(h, lo, c, 20),
        "l_rsi_14": talib.RSI(c, 14),
        "l_ema_12": talib.EMA(c, 12),
        "l_ema_26": talib.EMA(c, 26),
        "l_macd": macd,
        "l_macd_signal": signal,
        "l_macd_hist": hist,
        "l_bbands_upper_20": upper,
        "l_bbands_middle_20": middle,
        "l_bbands_lower_20": lower,
        "l_mom_5": talib.MOM(c, 5),
    }


def features_for(bars: pd.DataFrame) -> pd.DataFrame:
    con = warehouse_with(bars)
    build_features(con)
    return con.execute("SELECT * FROM features.hierarchical ORDER BY symbol, ts").df()


def test_registry_names_every_column_and_has_the_required_set(sample_bars):
    table = features_for(sample_bars)
    assert list(table.columns[:2]) == ["symbol", "ts"]
    assert set(table.columns[2:]) == {f.name for f in FEATURES}
    assert len(FEATURES) >= 30
    assert {f.name for f in FEATURES if f.talib} == REQUIRED_TALIB_COLUMNS
    assert all(f.name[:2] in ("h_", "l_", "s_") for f in FEATURES)
    for columns in INDICATORS.values():
        assert set(columns) <= set(table.columns)


@pytest.mark.parametrize("dataset", ["sample_bars", "daily_bars", "hourly_bars"])
def test_talib_namesakes_match_talib_at_every_bar(dataset, request):
    bars = request.getfixturevalue(dataset)
    table = features_for(bars)
    for symbol, ours in table.groupby("symbol"):
        theirs = talib_reference(bars[bars["symbol"] == symbol].sort_values("ts"))
        for column, expected in theirs.items():
            got = ours[column].to_numpy(dtype=float)
            assert np.array_equal(np.isnan(got), np.isnan(expected)), f"{symbol} {column}: warm-up differs"
            np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12, err_msg=f"{symbol} {column}")


def test_features_are_finite_after_their_lookback(sample_bars, hourly_bars):
    for bars in (sample_bars, hourly_bars):
        con = warehouse_with(bars)
        build_features(con)
        assert nonfinite_counts(con) == {f.name: 0 for f in FEATURES}


def test_a_feature_that_peeks_ahead_is_caught(daily_bars):
    con = warehouse_with(daily_bars)
    build_features(con)
    cut = daily_bars["ts"].iloc[700]
    assert point_in_time_difference(con, "S0000", cut) == 0.0
    con.execute("UPDATE features.hierarchical SET l_mom_5 = l_mom_5 + 1e-6 WHERE ts = ?", [cut])
    assert point_in_time_difference(con, "S0000", cut) > 1e-9


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=1498), scale=st.floats(min_value=0.2, max_value=5.0))
def test_changing_bars_after_t_leaves_every_feature_at_or_before_t_unchanged(daily_bars, cut, scale):
    bars = daily_bars[daily_bars["symbol"] == "S0001"].reset_index(drop=True)
    changed = bars.copy()
    after = changed.index > cut
    for column in ("open", "high", "low", "close", "volume"):
        changed.loc[after, column] *= scale
    before = features_for(bars).iloc[: cut + 1]
    after_change = features_for(changed).iloc[: cut + 1]
    pd.testing.assert_frame_equal(before, after_change, check_exact=True)


def test_model_features_follow_the_config_indicator_names():
    columns = model_features(["sma_50", "regime_indicator"], ["macd"])
    assert columns["strategic"] == ["h_sma_50_ratio", "h_regime", "h_trend_strength_50", "h_vol_ratio_20_100"]
    assert columns["tactical"][:3] == ["l_macd_norm", "l_macd_signal_norm", "l_macd_hist_norm"]
    assert "s_ret_1" in columns["tactical"]


def test_building_in_symbol_batches_gives_the_same_table(daily_bars):
    con = warehouse_with(daily_bars)
    build_features(con, rows_per_batch=1)
    batched = con.execute("SELECT * FROM features.hierarchical ORDER BY symbol, ts").df()
    pd.testing.assert_frame_equal(batched, features_for(daily_bars))
    assert sorted(batched["symbol"].unique()) == sorted(daily_bars["symbol"].unique())


def test_a_failed_build_leaves_the_previous_feature_table(daily_bars):
    con = warehouse_with(daily_bars)
    build_features(con)
    before = con.execute("SELECT * FROM features.hierarchical ORDER BY symbol, ts").df()
    last = sorted(daily_bars["symbol"].unique())[-1]
    con.execute(
        "CREATE VIEW clean.broken AS SELECT * REPLACE "
        f"(CASE WHEN symbol = '{last}' THEN error('bad batch') ELSE close END AS close) FROM clean.ohlcv"
    )
    with pytest.raises(duckdb.Error, match="bad batch"):
        build_features(con, source="clean.broken", rows_per_batch=1)
    after = con.execute("SELECT * FROM features.hierarchical ORDER BY symbol, ts").df()
    pd.testing.assert_frame_equal(after, before)
    tables = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'features' ORDER BY 1"
    ).fetchall()
    assert tables == [("hierarchical",), ("hierarchical_state",)]  # no staging table left behind


def table(con: duckdb.DuckDBPyConnection, name: str = "features.hierarchical") -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {name} ORDER BY symbol, ts").df()


def test_an_incremental_update_computes_the_new_bars_only_and_equals_a_full_rebuild(daily_bars):
    symbols = sorted(daily_bars["symbol"].unique())
    con = warehouse_with(daily_bars)
    cut = daily_bars["ts"].sort_values().iloc[-len(symbols) * 3]  # the last few bars of each symbol
    con.execute("CREATE TABLE clean.later AS SELECT * FROM clean.ohlcv WHERE ts > ?", [cut])
    con.execute("DELETE FROM clean.ohlcv WHERE ts > ?", [cut])
    build_features(con)
    con.execute("INSERT INTO clean.ohlcv SELECT * FROM clean.later")  # a daily ingest appends bars
    new_rows = con.execute("SELECT count(*) FROM clean.later").fetchone()[0]
    update = update_features(con)
    assert not update.full and update.rebuilt == [] and update.appended == new_rows
    incremental, state = table(con), table(con, "features.hierarchical_state")
    build_features(con)
    pd.testing.assert_frame_equal(incremental, table(con), check_exact=True)
    pd.testing.assert_frame_equal(state, table(con, "features.hierarchical_state"), check_exact=True)
    assert update_features(con).appended == 0  # nothing new: nothing computed


@pytest.mark.parametrize("before_reset", [1, 2])
def test_an_update_that_starts_just_before_a_reset_reads_enough_history(daily_bars, before_reset):
    """The first new bar ``before_reset`` bars before a reset: the continued build must reach back
    to the previous reset and the longest window before it (``HISTORY_BARS``), its worst case."""
    symbol = sorted(daily_bars["symbol"].unique())[0]
    bars = daily_bars[daily_bars["symbol"] == symbol].sort_values("ts").reset_index(drop=True)
    kept = (len(bars) - 10) // RESET * RESET - before_reset
    assert kept > RESET
    cut = bars["ts"].iloc[kept - 1]
    con = warehouse_with(bars)
    con.execute("CREATE TABLE clean.later AS SELECT * FROM clean.ohlcv WHERE ts > ?", [cut])
    con.execute("DELETE FROM clean.ohlcv WHERE ts > ?", [cut])
    build_features(con)
    con.execute("INSERT INTO clean.ohlcv SELECT * FROM clean.later")
    assert not update_features(con).full
    incremental = table(con)
    build_features(con)
    pd.testing.assert_frame_equal(incremental, table(con), check_exact=True)


def test_an_update_rebuilds_changed_new_and_short_symbols_and_drops_gone_ones(daily_bars):
    con = warehouse_with(daily_bars)
    first, second, third = sorted(daily_bars["symbol"].unique())[:3]
    build_features(con)
    con.execute(
        "UPDATE clean.ohlcv SET close = close * 1.01 "
        "WHERE symbol = ? AND ts = (SELECT min(ts) FROM clean.ohlcv)",
        [first],
    )
    con.execute("DELETE FROM clean.ohlcv WHERE symbol = ?", [second])
    con.execute(
        "INSERT INTO clean.ohlcv SELECT 'NEW' AS symbol, * EXCLUDE (symbol) FROM clean.ohlcv "
        "WHERE symbol = ? ORDER BY ts LIMIT 150",
        [third],
    )
    update = update_features(con)
    assert sorted(update.rebuilt) == sorted([first, "NEW"]) and update.appended == 0
    incremental = table(con)
    assert second not in set(incremental["symbol"])
    build_features(con)
    pd.testing.assert_frame_equal(incremental, table(con), check_exact=True)
