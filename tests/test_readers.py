"""Readers accept real exports and refuse unusable files with file, rule and example."""

from pathlib import Path

import pandas as pd
import pytest

from hrm_core.core.config import DataConfig
from hrm_core.core.errors import DataError
from hrm_core.data import sources
from hrm_core.data.readers import read_ohlcv_bytes
from hrm_core.data.sources import FileSource, SampleSource, make_source
from tests.conftest import write_csv

YAHOO = b"""Date,Open,High,Low,Close,Adj Close,Volume
2020-01-02,10,11,9,10.5,10.4,1000
2020-01-03,10.5,12,10,11,10.9,null
2020-01-06,11,11.5,10.5,11.2,11.1,1200
"""


def read(text: bytes, name: str = "AAPL.csv") -> pd.DataFrame:
    return read_ohlcv_bytes(text, name)


def test_yahoo_csv_is_normalised_with_symbol_from_stem():
    bars = read(YAHOO)
    assert list(bars.columns[:7]) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert bars["symbol"].unique().tolist() == ["AAPL"]
    assert str(bars["ts"].dt.tz) == "UTC"
    assert bars["close"].tolist() == [10.5, 11.0, 11.2]
    assert bars["source_row"].tolist() == [1, 2, 3]


def test_null_cells_become_missing_values_not_errors():
    assert pd.isna(read(YAHOO)["volume"].iloc[1])


def test_any_column_case_and_symbol_column_wins_over_stem():
    text = b"SYMBOL,TIMESTAMP,OPEN,HIGH,LOW,CLOSE,VOLUME\nMSFT,2020-01-02,1,2,0.5,1.5,10\n"
    bars = read(text, "whatever.csv")
    assert bars["symbol"].tolist() == ["MSFT"]


@pytest.mark.parametrize("scale", [1, 1000])
def test_epoch_seconds_and_milliseconds(scale):
    text = f"datetime_epoch,open,high,low,close,volume\n{1577923200 * scale},1,2,0.5,1.5,10\n".encode()
    assert read(text)["ts"].iloc[0] == pd.Timestamp("2020-01-02", tz="UTC")


def test_iso_timestamps_with_zones_are_stored_as_utc_for_intraday_bars():
    text = (
        b"ts,open,high,low,close,volume\n"
        b"2020-01-02T09:30:00-05:00,1,2,0.5,1.5,10\n"
        b"2020-01-02T15:31:00+01:00,1,2,0.5,1.5,10\n"
    )
    ts = read(text)["ts"]
    assert ts.iloc[0] == pd.Timestamp("2020-01-02 14:30", tz="UTC")
    assert ts.iloc[1] == pd.Timestamp("2020-01-02 14:31", tz="UTC")


def test_parquet_with_datetime_index(tmp_path: Path):
    frame = pd.DataFrame(
        {"Open": [1.0], "High": [2.0], "Low": [0.5], "Close": [1.5], "Volume": [10]},
        index=pd.DatetimeIndex(["2020-01-02 10:00"], name="Datetime"),
    )
    frame.to_parquet(tmp_path / "BTC.parquet")
    bars = read((tmp_path / "BTC.parquet").read_bytes(), str(tmp_path / "BTC.parquet"))
    assert bars["symbol"].tolist() == ["BTC"]
    assert bars["ts"].iloc[0] == pd.Timestamp("2020-01-02 10:00", tz="UTC")


@pytest.mark.parametrize(
    ("text", "rule", "example"),
    [
        (b"", "file is empty", "0 data bytes"),
        (b"Date,Open,High,Low,Close,Volume\n", "no data rows", "date"),
        (b"Date,Open,High,Low,Volume\n2020-01-02,1,2,0.5,10\n", "missing required columns", "close"),
        (
            b"Date,Open,High,Low,Close,Volume,Sentiment\n2020-01-02,1,2,0.5,1,10,up\n",
            "unknown columns",
            "sentiment",
        ),
        (
            b"Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1,10\nyesterday,1,2,0.5,1,10\n",
            "unparseable timestamps",
            "row 2: 'yesterday'",
        ),
        (
            b"ts,open,high,low,close,volume\n2020-01-02T10:00:00Z,1,2,0.5,1,10\n2020-01-02T11:00:00,1,2,0.5,1,10\n",
            "mixes time-zone-aware and naive",
            "row 2",
        ),
        (
            b"Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,abc,1,10\n",
            "column 'low' must be numeric",
            "'abc'",
        ),
    ],
)
def test_bad_files_name_the_file_the_rule_and_an_example(text, rule, example):
    with pytest.raises(DataError) as info:
        read(text, "bad/IBM.csv")
    message = str(info.value)
    assert message.startswith("bad/IBM.csv: ")
    assert rule in message
    assert example in message


def test_folder_source_reads_every_file_and_refuses_an_empty_folder(tmp_path: Path, daily_bars):
    for symbol, frame in daily_bars.groupby("symbol"):
        write_csv(frame, tmp_path / "csvs" / f"{symbol}.csv")
    bars = FileSource(str(tmp_path / "csvs"), "csv").load()
    assert sorted(bars["symbol"].unique()) == sorted(daily_bars["symbol"].unique())
    assert len(bars) == len(daily_bars)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no bars here")
    with pytest.raises(DataError, match=r"empty: no data files found .*notes.txt"):
        FileSource(str(tmp_path / "empty"), "csv").load()


def test_many_files_are_parsed_by_worker_processes_as_one_process_parses_them(
    tmp_path: Path, daily_bars, monkeypatch: pytest.MonkeyPatch
):
    for symbol, frame in daily_bars.groupby("symbol"):
        write_csv(frame, tmp_path / "csvs" / f"{symbol}.csv")
    one_process = FileSource(str(tmp_path / "csvs"), "csv").load()
    monkeypatch.setattr(sources, "PARALLEL_BYTES", 1)  # three files: two workers
    monkeypatch.setattr(sources.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sources, "_LAST_FILES_LOAD", {})
    pd.testing.assert_frame_equal(FileSource(str(tmp_path / "csvs"), "csv").load(), one_process)
    (tmp_path / "csvs" / "BAD.csv").write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,x,2,1,1,1\n")
    with pytest.raises(DataError, match=r"BAD.csv: column 'open' must be numeric \(example: row 1: 'x'\)"):
        FileSource(str(tmp_path / "csvs"), "csv").load()  # a worker's error, as the caller's own


def test_a_file_source_limited_to_files_reads_only_those(tmp_path: Path, daily_bars):
    paths = [
        write_csv(frame, tmp_path / "csvs" / f"{symbol}.csv")
        for symbol, frame in daily_bars.groupby("symbol")
    ]
    source = make_source(DataConfig(source="csv", path=str(tmp_path / "csvs")), files=(str(paths[1]),))
    assert source.load()["symbol"].unique().tolist() == [paths[1].stem]


def test_sample_source_is_real_sp500_and_nasdaq():
    bars = SampleSource().load()
    assert sorted(bars["symbol"].unique()) == ["NASDAQ", "SP500"]
    sp = bars[bars["symbol"] == "SP500"]
    assert sp["ts"].min() == pd.Timestamp("1999-01-04", tz="UTC")
    assert sp["ts"].max() == pd.Timestamp("2018-12-31", tz="UTC")
    assert sp["close"].iloc[0] == pytest.approx(1228.099976)


def test_yfinance_offline_fails_with_a_clear_message(monkeypatch):
    source = make_source(DataConfig(source="yfinance", symbols=["SPY"]))
    with pytest.raises(DataError, match="yfinance"):
        source.load()
