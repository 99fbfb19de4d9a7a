"""Hostile and odd input, property-based: whatever bytes, encodings, delimiters, values, dates,
symbols or arguments come in, the result is clean rows plus quarantined rows (none lost) or an
error of the project's own type that names the file, the rule and an example; never a traceback
from inside pandas, pyarrow, DuckDB or Great Expectations."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hrm_core.core.config import ValidationConfig
from hrm_core.core.errors import DataError, HRMError
from hrm_core.data.readers import read_ohlcv_bytes
from hrm_core.data.validation import validate_ohlcv
from hrm_core.data.versioning import snapshot_path
from pipelines.cli import main

HEADER = "Date,Open,High,Low,Close,Volume"
ODD_NUMBERS = st.sampled_from(
    ["1", "1.5", '"2.5"', "inf", "-inf", "nan", "NaN", "1e308", "-1e308", "", "null", "0", "-3", "1,5", "abc"]
)
ODD_DATES = st.sampled_from(
    [
        "2020-01-02",
        "2020-01-02T10:00:00Z",
        "2020-01-02 10:00:00+02:00",
        "2600-01-01",
        "1850-06-30",
        "0001-01-01",
        "9999-12-31",
        "2020-13-45",
        "",
        "yesterday",
        "1e20",
        "2020/01/03",
    ]
)


def parse_or_refuse(payload: bytes, name: str) -> pd.DataFrame | None:
    """The reader's result, or None when it refused with a DataError naming the file."""
    try:
        return read_ohlcv_bytes(payload, name)
    except DataError as error:
        assert name in str(error) and error.rule
        return None


def keeps_every_row(bars: pd.DataFrame) -> None:
    report = validate_ohlcv(bars, ValidationConfig())
    assert len(report.clean) + len(report.quarantine) == len(bars)
    for r in report.symbols.values():
        assert r.rows_in == r.rows_clean + r.rows_quarantined
    assert np.isfinite(report.clean[["open", "high", "low", "close", "volume"]].to_numpy()).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_are_read_or_refused_by_a_named_rule(payload: bytes):
    for name in ("X.csv", "X.parquet"):
        parse_or_refuse(payload, name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(ODD_DATES, ODD_NUMBERS, ODD_NUMBERS, ODD_NUMBERS, ODD_NUMBERS, ODD_NUMBERS), max_size=12
    ),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]),
)
def test_odd_csv_files_end_in_clean_plus_quarantined_rows_or_a_named_refusal(rows, delimiter, encoding):
    text = "\n".join([HEADER.replace(",", delimiter), *(delimiter.join(r) for r in rows)]) + "\n"
    bars = parse_or_refuse(text.encode(encoding), "ODD.csv")
    if bars is not None:
        keeps_every_row(bars)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**12).map(float)),
        min_size=5,
        max_size=5,
    ),
    epoch=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20)),
    as_string=st.booleans(),
)
def test_odd_parquet_values_and_types_end_in_clean_plus_quarantined_rows(values, epoch, as_string):
    frame = pd.DataFrame(
        {
            "datetime_epoch": [1_600_000_000.0, float(epoch)],
            **{c: [1.0, v] for c, v in zip(["open", "high", "low", "close", "volume"], values, strict=True)},
        }
    )
    if as_string:
        frame = frame.astype(str)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    bars = parse_or_refuse(buffer.getvalue(), "ODD.parquet")
    if bars is not None:
        keeps_every_row(bars)


def test_duplicate_columns_and_a_bom_are_handled():
    assert (
        parse_or_refuse(b"Date,Open,open,High,Low,Close,Volume\n2020-01-02,1,1,2,0.5,1,1\n", "D.csv") is None
    )
    bars = parse_or_refuse(f"\ufeff{HEADER}\n2020-01-02,1,2,0.5,1,1\n".encode(), "BOM.csv")
    assert bars is not None and len(bars) == 1


@pytest.mark.parametrize(
    "symbol", ["../../x", "/abs/x", "a b", "x'; DROP TABLE raw.ohlcv; --", 'q"uote', "ü", "."]
)
def test_symbols_that_could_name_a_path_or_break_a_query_are_refused(symbol: str):
    text = f"symbol,{HEADER}\n{symbol},2020-01-02,1,2,0.5,1,1\n".encode()
    with pytest.raises(DataError, match="symbol names must match"):
        read_ohlcv_bytes(text, "S.csv")


@pytest.mark.parametrize("symbol", ["../../x", "/abs/x", "a/b", ".."])
def test_no_symbol_names_a_snapshot_outside_the_folder(symbol: str, tmp_path: Path):
    with pytest.raises(HRMError, match="must not leave"):
        snapshot_path(tmp_path, symbol)


def test_the_values_rules_quarantine_what_is_not_a_price():
    bars = read_ohlcv_bytes(
        (
            f"{HEADER}\n2020-01-02,1,2,0.5,1,10\n2020-01-03,inf,inf,0.5,1,10\n2020-01-06,1,1e308,0.5,1,10\n"
            "2020-01-07,1,2,0.5,1,\n2600-01-01,1,2,0.5,1,10\n1850-01-01,1,2,0.5,1,10\n"
        ).encode(),
        "V.csv",
    )
    report = validate_ohlcv(bars, ValidationConfig())
    assert report.symbols["V"].rows_clean == 1
    assert report.symbols["V"].rule_counts == {
        "ts_present_in_1900_2200": 2,
        "values_finite_and_sane": 2,
        "volume_not_null": 1,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--workers", "0"], "--workers"),
        (["evaluate", "--folds", "x"], "--folds"),
        (["evaluate", "--models", "hrm,oracle"], "unknown model 'oracle'"),
        (["run", "--config", "missing.yaml"], "missing.yaml"),
        (["run", "--source", "csv", "--path", "nowhere/"], "nowhere"),
        (["data", "restore", "--model-version", "99"], "no such version"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(project: Path, argv: list[str], message: str, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"training": {"device": "cuda"}}, "no CUDA device"),
        ({"splits": {"n_folds": 500}}, "every block has at least 30 bars"),
        ({"training": {"colour": "red"}}, "colour"),
        ({"training": {"learning_rate": "fast"}}, "learning_rate"),
    ],
)
def test_impossible_configs_are_refused_before_any_work(
    project: Path, section: dict, message: str, capsys, monkeypatch: pytest.MonkeyPatch
):
    import torch
    import yaml

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, also on a GPU node
    preset = yaml.safe_load((project / "configs" / "hrm_cpu_small.yaml").read_text())
    for name, values in section.items():
        preset[name] = {**preset[name], **values}
    (project / "configs" / "bad.yaml").write_text(yaml.safe_dump(preset))
    code = main(["run", "--config", "configs/bad.yaml"])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and "Traceback" not in err
    if code == 1:  # found by the data job: the run is undone, the fresh home has no warehouse again
        assert not (project.parent / "hrm_home" / "warehouse.duckdb").exists()
