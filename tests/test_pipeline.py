"""The data plane through Dagster and the CLI, in a temporary HRM_HOME and project copy."""

import re
import socket
from datetime import UTC, datetime
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import pandas as pd
import pytest

from assets.resources import HRMSettings
from hrm_core.data.synthetic import random_walk_bars
from pipelines.cli import main
from pipelines.definitions import build_definitions
from pipelines.jobs import daily_ingest_schedule, partition_range_tags, sync_symbol_partitions
from pipelines.resources import local_resources
from tests.conftest import write_csv

pytestmark = pytest.mark.slow


def warehouse_counts(home: Path) -> dict[str, int]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    tables = (
        "raw.ohlcv",
        "clean.ohlcv",
        "quarantine.ohlcv",
        "features.hierarchical",
        "labels.forward",
        "splits.rows",
    )
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    con.close()
    return counts


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    bars = random_walk_bars(2, 1400, "1D", seed=3)
    for symbol, frame in bars.groupby("symbol"):
        write_csv(frame, tmp_path / "csv" / f"{symbol}.csv")
    return tmp_path / "csv"


def test_data_job_materialises_every_asset_on_the_sample_data(project: Path, tmp_path: Path):
    home = tmp_path / "hrm_home"
    resources = {**local_resources(home, str(project)), "settings": HRMSettings(project_dir=str(project))}
    defs = build_definitions(resources)
    with dg.instance_for_test() as instance:
        symbols = sync_symbol_partitions(instance, ["NASDAQ", "SP500"])
        result = defs.resolve_job_def("data_job").execute_in_process(
            instance=instance, tags=partition_range_tags(symbols)
        )
    assert result.success
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {
        "raw_ohlcv",
        "clean_ohlcv",
        "dataset_version",
        "hierarchical_features",
        "training_labels",
        "walk_forward_splits",
    }
    checks = {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks == {
        "ohlcv_schema": True,
        "quarantine_share_within_threshold": True,
        "features_finite": True,
        "features_point_in_time": True,
        "splits_purged_and_embargoed": True,
    }
    counts = warehouse_counts(home)
    assert counts["raw.ohlcv"] == counts["clean.ohlcv"] + counts["quarantine.ohlcv"] == 2 * 5031
    assert counts["features.hierarchical"] == counts["labels.forward"] == 2 * 5031
    assert (home / "data" / "raw" / "SP500.parquet").exists()
    assert "md5:" in (home / "data.dvc").read_text()
    assert any((home / "dvc-remote").rglob("*"))
    assert not (project / "data").exists() and not (project / "data.dvc").exists()


def test_cli_runs_on_csv_files_and_prints_the_summary(project: Path, csv_folder: Path, capsys):
    bad = csv_folder / "S0000.csv"
    lines = bad.read_text().splitlines()
    fields = lines[5].split(",")
    fields[2], fields[3] = fields[3], fields[2]  # high < low on one bar
    lines[5] = ",".join(fields)
    bad.write_text("\n".join(lines) + "\n")

    assert main(["run", "--job", "data", "--source", "csv", "--path", str(csv_folder)]) == 0
    out = capsys.readouterr().out
    assert "S0000: 1400 rows in, 1399 clean, 1 quarantined" in out
    assert "S0001: 1400 rows in, 1400 clean, 0 quarantined" in out
    assert "features: 51 columns" in out
    assert "data version (DVC md5): " in out
    assert "fold 3: train 2000-01-03" in out
    first = warehouse_counts(Path(project.parent / "hrm_home"))

    assert main(["run", "--job", "data", "--source", "csv", "--path", str(csv_folder)]) == 0
    assert warehouse_counts(Path(project.parent / "hrm_home")) == first  # re-ingest is idempotent


def test_cli_bad_file_is_a_clear_error_with_non_zero_exit(project: Path, csv_folder: Path, capsys):
    (csv_folder / "BROKEN.csv").write_text("Date,Open,High,Low,Close,Volume\nnot-a-date,1,2,0.5,1,10\n")
    assert main(["run", "--job", "data", "--source", "csv", "--path", str(csv_folder)]) == 2
    err = capsys.readouterr().err
    assert "BROKEN.csv: column 'date' has unparseable timestamps" in err
    assert "not-a-date" in err


def test_failed_check_leaves_the_warehouse_as_it_was(project: Path, csv_folder: Path, capsys):
    assert main(["run", "--job", "data", "--source", "csv", "--path", str(csv_folder)]) == 0
    home = project.parent / "hrm_home"
    before = warehouse_counts(home)
    bad = csv_folder / "S0001.csv"
    lines = bad.read_text().splitlines()
    for i in range(1, 60):  # 59 of 1400 rows get a null close: 4 % > 1 %
        fields = lines[i].split(",")
        fields[4] = "null"
        lines[i] = ",".join(fields)
    bad.write_text("\n".join(lines) + "\n")
    assert main(["run", "--job", "data", "--source", "csv", "--path", str(csv_folder)]) == 1
    err = capsys.readouterr().err
    assert "quarantine_share_within_threshold" in err and "ohlc_not_null" in err
    assert "as they were before this run" in err
    kept = pd.read_parquet(re.search(r"'quarantined_rows_file': '([^']+)'", err).group(1))
    assert len(kept) == 59 and set(kept["symbol"]) == {"S0001"}
    assert warehouse_counts(home) == before  # the whole run is undone, raw.ohlcv included
    assert not (home / ".before-run").exists()


def test_dvc_versioning_survives_a_data_dvc_naming_a_missing_cache_entry(project: Path, csv_folder: Path):
    home = project.parent / "hrm_home"
    home.mkdir()
    (home / "data.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n"
        "  size: 1\n  nfiles: 1\n  hash: md5\n  path: data\n"
    )
    assert main(["run", "--job", "data", "--source", "csv", "--path", str(csv_folder)]) == 0
    assert "0123456789abcdef" not in (home / "data.dvc").read_text()


def test_a_run_on_another_source_works_on_exactly_its_symbols(project: Path, csv_folder: Path, capsys):
    home = project.parent / "hrm_home"
    assert main(["run", "--job", "data", "--source", "csv", "--path", str(csv_folder)]) == 0
    one = csv_folder.parent / "one"
    one.mkdir()
    (csv_folder / "S0000.csv").rename(one / "MINE.csv")
    capsys.readouterr()
    assert main(["run", "--job", "data", "--source", "csv", "--path", str(one)]) == 0
    out = capsys.readouterr().out
    assert "on 1 symbol(s) from 'csv': MINE" in out
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    tables = ("raw.ohlcv", "clean.ohlcv", "quarantine.ohlcv", "features.hierarchical", "splits.rows")
    symbols = {t: {r[0] for r in con.execute(f"SELECT DISTINCT symbol FROM {t}").fetchall()} for t in tables}
    con.close()
    assert symbols == {t: ({"MINE"} if t != "quarantine.ohlcv" else set()) for t in tables}
    assert sorted(p.name for p in (home / "data" / "raw").iterdir()) == ["MINE.parquet"]
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("symbols") == ["MINE"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_source_against_a_local_s3_server(project: Path, csv_folder: Path, monkeypatch, capsys):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for key, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "HRM_S3_ENDPOINT_URL": endpoint,
        }.items():
            monkeypatch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="market-data")
        for path in csv_folder.iterdir():
            client.upload_file(str(path), "market-data", f"daily/{path.name}")
        assert main(["run", "--job", "data", "--source", "s3", "--path", "s3://market-data/daily/"]) == 0
        assert "S0001: 1400 rows in, 1400 clean" in capsys.readouterr().out
    finally:
        server.stop()


def test_daily_schedule_discovers_symbols_and_covers_them_in_one_run(project: Path, csv_folder: Path):
    settings = HRMSettings(project_dir=str(project), source="csv", path=str(csv_folder))
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            resources={"settings": settings, "s3": local_resources()["s3"]},
            scheduled_execution_time=datetime(2026, 11, 24, 6, tzinfo=UTC),
        )
        request = daily_ingest_schedule(context)
        assert instance.get_dynamic_partitions("symbols") == ["S0000", "S0001"]
    assert request.tags["dagster/asset_partition_range_start"] == "S0000"
    assert request.tags["dagster/asset_partition_range_end"] == "S0001"
