"""The production warehouse on Iceberg (a SQL catalog on SQLite; data files in a local folder and on
an S3-compatible server): writers of different symbols in separate processes both land, writers of
the same symbol never lose rows silently (one lands, the other fails loudly), a block that raises
writes nothing, a run killed with -9 at several points is undone by restoring what it wrote while a
concurrent run of another symbol survives, and maintenance compacts, expires and removes orphans
without touching a snapshot a model version names."""

import signal
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from hrm_core.core.errors import HRMError
from hrm_core.data.iceberg import ConflictError, Iceberg
from hrm_core.data.warehouse import ensure_tables, replace_symbols, transaction

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free localhost port, with a bucket; stopped after the module."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1"
    ).create_bucket(Bucket="hrm")
    yield endpoint
    server.stop()


@pytest.fixture(params=["local", "s3"])
def catalog(request, tmp_path) -> dict[str, str]:
    """Catalog properties: SQLite, with data files in a folder or in a bucket of the S3 server."""
    properties = {"type": "sql", "uri": f"sqlite:///{tmp_path / 'catalog.db'}"}
    if request.param == "local":
        return properties | {"warehouse": (tmp_path / "warehouse").as_uri()}
    endpoint = request.getfixturevalue("s3_endpoint")
    return properties | {
        "warehouse": f"s3://hrm/{tmp_path.name}",
        "s3.endpoint": endpoint,
        "s3.access-key-id": "x",
        "s3.secret-access-key": "y",
        "s3.region": "us-east-1",
    }


@pytest.fixture
def local_catalog(tmp_path) -> dict[str, str]:
    """The SQLite catalog with files in a folder: for what the file system does not change."""
    return {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": (tmp_path / "warehouse").as_uri(),
    }


def bars(symbol: str, n: int = 50, value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": pd.date_range("2020-01-01", periods=n, freq="D"),
            **{c: value + i for i, c in enumerate(("open", "high", "low", "close", "volume"))},
            "source_file": f"{symbol}.csv",
            "source_row": range(n),
        }
    )


def write(catalog: dict, symbol: str, run_id: str, n: int = 50, value: float = 1.0, barrier=None) -> str:
    """One partition writer, as a raw_ohlcv step pod: read, replace its symbol's rows, commit (what
    ``IcebergWarehouse.get_connection`` does around an asset)."""
    iceberg = Iceberg(catalog)
    con = duckdb.connect()
    loaded = iceberg.load_into(con)
    ensure_tables(con)
    with transaction(con):
        replace_symbols(con, "raw.ohlcv", bars(symbol, n, value), [symbol])
    if barrier is not None:
        barrier.wait(60)  # every writer has read the same snapshot before any commits
    try:
        iceberg.commit(con, loaded, run_id)
    except ConflictError:
        return "conflict"
    return "landed"


def rows(catalog: dict, table: str = "raw.ohlcv") -> pd.DataFrame:
    return Iceberg(catalog).read(table).to_pandas().sort_values(["symbol", "ts"], ignore_index=True)


def test_writers_of_different_symbols_in_parallel_processes_all_land(catalog):
    symbols = [f"S{i}" for i in range(4)]
    with (
        get_context("spawn").Manager() as manager,
        ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool,
    ):
        barrier = manager.Barrier(len(symbols))  # all read the empty warehouse, then all commit
        outcomes = list(pool.map(write, [catalog] * 4, symbols, symbols, [50] * 4, [1.0] * 4, [barrier] * 4))
    assert outcomes == ["landed"] * 4
    written = rows(catalog)
    assert written.groupby("symbol").size().to_dict() == dict.fromkeys(symbols, 50)
    assert not written.duplicated().any()
    assert write(catalog, "S0", "again") == "landed"  # re-ingesting a symbol replaces its rows
    assert len(rows(catalog)) == 200


def test_writers_of_the_same_symbol_never_lose_rows_silently(catalog):
    write(catalog, "S0", "first")
    for trial in range(2):
        with get_context("spawn").Manager() as manager, ProcessPoolExecutor(2, get_context("spawn")) as pool:
            barrier = manager.Barrier(2)
            values = [10.0 * (trial + 1), 10.0 * (trial + 1) + 5]
            outcomes = list(
                pool.map(write, [catalog] * 2, ["S0"] * 2, ["a", "b"], [30, 40], values, [barrier] * 2)
            )
        assert sorted(outcomes) == ["conflict", "landed"]  # one lands, the other fails loudly
        winner = outcomes.index("landed")
        expected = bars("S0", [30, 40][winner], values[winner])
        written = rows(catalog)
        assert len(written) == len(expected) and written["open"].tolist() == expected["open"].tolist()
    assert write(catalog, "S0", "later") == "landed"  # one after the other, both land in order
    assert len(rows(catalog)) == 50


def test_a_block_that_raises_or_changes_nothing_writes_nothing(local_catalog, tmp_path):
    from assets.resources import IcebergWarehouse

    warehouse = IcebergWarehouse(catalog=local_catalog)
    with pytest.raises(RuntimeError), warehouse.get_connection() as con:
        ensure_tables(con)
        replace_symbols(con, "raw.ohlcv", bars("S0"), ["S0"])
        raise RuntimeError("a failing step")
    assert warehouse.iceberg().snapshots() == {}
    with warehouse.get_connection() as con:
        ensure_tables(con)
        replace_symbols(con, "raw.ohlcv", bars("S0"), ["S0"])
    first = warehouse.iceberg().snapshots()
    with warehouse.get_connection() as con:  # the same rows again: nothing to commit
        replace_symbols(con, "raw.ohlcv", bars("S0"), ["S0"])
    assert warehouse.iceberg().snapshots() == first
    with warehouse.get_connection() as con:  # a table the block creates; Iceberg has no unsigned types
        con.execute("CREATE TABLE features.state AS SELECT 'S0' AS symbol, hash(42) AS fingerprint")
        con.execute("SELECT 1")  # an unfinished result does not stop the commit
    with warehouse.get_connection() as con:
        assert con.execute("SELECT fingerprint = hash(42) FROM features.state").fetchone() == (True,)
    with warehouse.get_connection() as con:  # the same SQL as the local warehouse reads it back
        assert con.execute("SELECT count(*), max(source_row) FROM raw.ohlcv").fetchone() == (50, 49)
        assert con.execute("SELECT count(*) FROM clean.ohlcv").fetchone() == (0,)


KILLER = """
import os, signal, sys
import duckdb
import pyiceberg.table
import hrm_core.data.iceberg as iceberg_module
from hrm_core.data.iceberg import Iceberg
from hrm_core.data.warehouse import ensure_tables, replace_symbols
from tests.test_iceberg import bars

point, catalog, run_id = sys.argv[1], eval(sys.argv[2]), sys.argv[3]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "between tables":  # the first table's commit lands, then the process dies
    overwrite = iceberg_module._overwrite
    def overwrite_then_die(*args, **kwargs):
        overwrite(*args, **kwargs)
        die()
    iceberg_module._overwrite = overwrite_then_die
if point == "inside the catalog commit":  # data and manifests written, the catalog never told
    pyiceberg.table.Table._do_commit = lambda *args, **kwargs: die()
iceberg = Iceberg(catalog)
con = duckdb.connect()
loaded = iceberg.load_into(con)
ensure_tables(con)
replace_symbols(con, "raw.ohlcv", bars("S0", 20, 100.0), ["S0"])
replace_symbols(con, "raw.ohlcv", bars("S1", 20, 100.0), ["S1"])
con.execute("INSERT INTO quarantine.ohlcv SELECT *, ['killed'] FROM raw.ohlcv WHERE symbol = 'S1'")
if point == "before the commit":
    die()
iceberg.commit(con, loaded, run_id)
"""


@pytest.mark.parametrize("point", ["before the commit", "between tables", "inside the catalog commit"])
def test_a_run_killed_at_any_point_is_undone_and_a_concurrent_run_survives(local_catalog, point):
    write(local_catalog, "S0", "earlier")
    before = rows(local_catalog)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, point, repr(local_catalog), "killed-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert write(local_catalog, "S9", "concurrent") == "landed"  # another symbol's run, after the kill
    Iceberg(local_catalog).revert_runs(["killed-run"])
    after = rows(local_catalog)
    pd.testing.assert_frame_equal(after[after["symbol"] != "S9"].reset_index(drop=True), before)
    assert len(after[after["symbol"] == "S9"]) == 50  # the concurrent run survived the revert
    quarantine = (
        Iceberg(local_catalog).snapshots().get("quarantine.ohlcv")
    )  # absent, or without the run's rows
    assert quarantine is None or rows(local_catalog, "quarantine.ohlcv").empty
    assert Iceberg(local_catalog).revert_runs(["killed-run"]) == 0  # reverting twice changes nothing


def test_a_revert_leaves_a_partition_another_run_rewrote_after_it(local_catalog):
    write(local_catalog, "S0", "good")
    write(local_catalog, "S1", "failed-run", value=7.0)
    write(local_catalog, "S0", "failed-run", n=20)
    write(local_catalog, "S0", "a-later-run", n=30)  # rewrites S0 whole after the failed run
    assert Iceberg(local_catalog).revert_runs(["failed-run"]) == 1  # S1 only
    assert rows(local_catalog).groupby("symbol").size().to_dict() == {"S0": 30}


def test_runs_reverted_together_go_back_to_before_the_first_and_an_expired_start_is_refused(local_catalog):
    write(local_catalog, "S0", "good")
    write(local_catalog, "S0", "ingest-run", value=2.0)  # a failed run's ingest, then the run itself
    write(local_catalog, "S0", "the-run", value=3.0)
    assert Iceberg(local_catalog).revert_runs(["the-run", "ingest-run"]) == 1
    assert rows(local_catalog)["open"].iloc[0] == 1.0  # as before the first of them
    write(local_catalog, "S0", "later-run", value=4.0)
    Iceberg(local_catalog).maintain(set(), older_than=timedelta(0), orphan_age=timedelta(days=1))
    with pytest.raises(HRMError, match="has expired; they cannot be reverted"):
        Iceberg(local_catalog).revert_runs(["later-run"])  # its starting snapshot is gone: never emptied
    assert rows(local_catalog)["open"].iloc[0] == 4.0


def test_a_block_that_changes_a_tables_columns_leaves_them_in_its_order(local_catalog):
    """Asset SQL inserts by position, so the table must come back with the block's columns."""
    iceberg = Iceberg(local_catalog)
    for columns in ("symbol, a, d", "symbol, a, c, d", "symbol, c"):
        con = duckdb.connect()
        loaded = iceberg.load_into(con)
        con.execute("DROP TABLE IF EXISTS features.t")
        values = ", ".join(str(i) for i in range(1, len(columns.split(", "))))
        con.execute(f"CREATE TABLE features.t AS SELECT * FROM (VALUES ('A', {values})) v({columns})")
        iceberg.commit(con, loaded, "rebuild")
        con = duckdb.connect()
        iceberg.load_into(con)
        assert [c[0] for c in con.sql("DESCRIBE features.t").fetchall()] == columns.split(", ")
        assert con.sql("SELECT * FROM features.t").fetchall() == [("A", *range(1, len(columns.split(", "))))]


def test_the_commits_of_a_run_whose_process_died_are_undone_by_the_next_command(local_catalog, tmp_path):
    import socket

    import dagster as dg

    from assets.resources import IcebergWarehouse
    from pipelines.home import HOST_TAG, PID_TAG, recover_home
    from pipelines.resources import local_resources

    warehouse = IcebergWarehouse(catalog=local_catalog)
    write(local_catalog, "S0", "finished-run")
    with dg.instance_for_test() as instance:
        dead = instance.create_run_for_job(  # never finished; its process (pid) is gone
            dg.GraphDefinition("g").to_job(), tags={PID_TAG: "999999999", HOST_TAG: socket.gethostname()}
        )
        write(local_catalog, "S1", dead.run_id)
        tracking = local_resources(tmp_path / "home")["tracking"]
        notes = recover_home(tmp_path / "home", instance, tracking, warehouse)
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert "restored 1 warehouse partition(s) those runs wrote" in notes
    assert sorted(rows(local_catalog)["symbol"].unique()) == ["S0"]


def test_maintenance_compacts_expires_and_removes_orphans_but_keeps_named_snapshots(catalog):
    iceberg = Iceberg(catalog)
    write(catalog, "S0", "v1-data")
    named = iceberg.snapshots()["raw.ohlcv"]  # a registered model version names this snapshot
    for i in range(4):
        write(catalog, "S0", f"run-{i}", value=2.0 + i)
        write(catalog, "S1", f"run-{i}", value=2.0 + i)
    unnamed = iceberg.snapshots()["raw.ohlcv"]
    write(catalog, "S1", "last", value=9.0)
    table = iceberg.catalog().load_table("raw.ohlcv")
    scheme, netloc, base = table.io.parse_location(table.location())
    fs = table.io.fs_by_scheme(scheme, netloc)
    with fs.open_output_stream(f"{base}/data/orphan.parquet") as out:  # a writer that died long ago
        out.write(b"not referenced")
    current = rows(catalog)
    done = iceberg.maintain(keep={named}, older_than=timedelta(0), orphan_age=timedelta(0))
    assert done.expired["raw.ohlcv"] > 0 and done.orphans_removed["raw.ohlcv"] >= 1
    table = iceberg.catalog().load_table("raw.ohlcv")
    assert len(table.snapshots()) == 2  # the current snapshot and the one a version names
    assert table.inspect.files().num_rows == 2  # one file per partition
    pd.testing.assert_frame_equal(rows(catalog), current)
    assert iceberg.read("raw.ohlcv", named).num_rows == 50  # time travel to the named snapshot
    with pytest.raises(HRMError, match=f"snapshot {unnamed} is no longer kept"):
        iceberg.read("raw.ohlcv", unnamed)


def test_the_maintenance_job_keeps_what_a_model_version_names_and_data_show_reads_it_back(catalog, tmp_path):
    """The Dagster job, as its schedule runs it: a registered version names the first snapshots;
    after maintenance they are still there and ``data show --version`` reads them by time travel."""
    import json

    from assets.resources import IcebergWarehouse
    from pipelines.jobs import maintenance_job
    from pipelines.resources import local_resources
    from pipelines.status import show_model_data

    warehouse = IcebergWarehouse(catalog=catalog)
    tracking = local_resources(tmp_path / "home")["tracking"]
    write(catalog, "S0", "trained-on")
    named = Iceberg(catalog).snapshots()
    client = tracking.client()
    client.create_registered_model(tracking.model_name)
    client.create_model_version(
        tracking.model_name, (tmp_path / "model").as_uri(), tags={"warehouse_snapshots": json.dumps(named)}
    )
    for i in range(3):
        write(catalog, "S0", f"later-{i}", value=5.0 + i)
    result = maintenance_job.execute_in_process(
        resources={"warehouse": warehouse, "tracking": tracking},
        run_config={
            "ops": {"warehouse_maintenance": {"config": {"expire_after_hours": 0, "orphan_after_hours": 0}}}
        },
    )
    assert result.success
    kept = result.output_for_node("warehouse_maintenance")["kept"]["raw.ohlcv"]
    assert named["raw.ohlcv"] in kept and len(kept) == 2  # the named snapshot and the current one
    shown = show_model_data({"tracking": tracking, "warehouse": warehouse}, "1", None, None, 5)
    assert f"raw.ohlcv                    snapshot {named['raw.ohlcv']}: S0 50" in shown
    rows_then = show_model_data({"tracking": tracking, "warehouse": warehouse}, "1", "raw.ohlcv", "S0", 3)
    assert "(50 rows)" in rows_then and "1.0" in rows_then  # the values as trained on, not the later 7.0


def test_a_block_that_names_its_tables_loads_only_those_and_cannot_change_what_it_only_reads(local_catalog):
    from assets.resources import IcebergWarehouse, connect

    write(local_catalog, "S0", "ingest")  # raw.ohlcv, and the empty clean and quarantine tables
    with IcebergWarehouse(catalog=local_catalog).get_connection() as con:
        con.execute(
            "INSERT INTO clean.ohlcv SELECT symbol, ts, open, high, low, close, volume FROM raw.ohlcv"
        )
    before = Iceberg(local_catalog).snapshots()
    iceberg = Iceberg(local_catalog)
    con = duckdb.connect()
    loaded = iceberg.load_into(con, reads=["clean.ohlcv"], writes=["features.t"])
    assert set(loaded.tables) == {"clean.ohlcv"}  # features.t is not there yet; raw and quarantine not read
    assert loaded.fingerprints == {}  # nothing it may write holds rows yet: nothing hashed
    assert warehouse_tables(con) == {"clean.ohlcv"}
    with pytest.raises(duckdb.Error):  # a change to a table read only fails, never dropped at commit
        con.execute("DELETE FROM clean.ohlcv")
    con.execute(
        "CREATE TABLE features.t AS SELECT symbol, avg(close) AS mean FROM clean.ohlcv GROUP BY symbol"
    )
    written = iceberg.commit(con, loaded, "features")
    assert set(written) == {"features.t"}
    after = Iceberg(local_catalog).snapshots()
    assert {k: v for k, v in after.items() if k != "features.t"} == before
    with connect(IcebergWarehouse(catalog=local_catalog), ["features.t"]) as con:  # what an asset calls
        assert con.execute("SELECT symbol, mean FROM features.t").fetchall() == [("S0", 4.0)]
        assert warehouse_tables(con) == {"features.t"}


def warehouse_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    query = (
        "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema <> 'main'"
    )
    return {name for (name,) in con.execute(query).fetchall()}


def test_a_write_of_many_partitions_lands_every_row_exactly_once(local_catalog):
    """Partitions of different sizes (one of one row), in no order: each lands in its own file,
    with every row once; a rewrite of some, cut into files of a small target size, replaces
    exactly those."""
    import json

    iceberg = Iceberg(local_catalog)
    con = duckdb.connect()
    loaded = iceberg.load_into(con)
    con.execute(
        "CREATE TABLE features.t AS SELECT 'S' || (i % 120) AS symbol, i, i / 2 AS x "
        "FROM range(20000) r(i) WHERE i % 120 <> 7 OR i = 7 ORDER BY hash(i)"
    )
    expected = con.execute("SELECT * FROM features.t ORDER BY i").df()
    iceberg.commit(con, loaded, "many")
    table = iceberg.catalog().load_table("features.t")
    files = table.inspect.files().to_pydict()
    assert len(files["file_path"]) == 120  # one file per partition
    assert sorted(p["symbol"] for p in files["partition"]) == sorted(expected["symbol"].unique())
    landed = iceberg.read("features.t").to_pandas().sort_values("i", ignore_index=True)
    pd.testing.assert_frame_equal(landed, expected)
    con = duckdb.connect()
    loaded = iceberg.load_into(con, reads=[], writes=["features.t"])
    con.execute("DELETE FROM features.t WHERE symbol IN ('S1', 'S7')")
    con.execute("UPDATE features.t SET x = -x WHERE symbol = 'S2'")
    con.execute("INSERT INTO features.t VALUES ('S1', -1, 0.0), ('NEW', -2, 0.0)")
    expected = con.execute("SELECT * FROM features.t ORDER BY i").df()
    with table.transaction() as transaction:
        transaction.set_properties({"write.target-file-size-bytes": "1024"})
    loaded.tables["features.t"] = iceberg.catalog().load_table("features.t")
    iceberg.commit(con, loaded, "rewrite")
    table = iceberg.catalog().load_table("features.t")
    assert json.loads(table.current_snapshot().summary["hrm.partitions"]) == ["NEW", "S1", "S2", "S7"]
    per_partition = pd.Series(
        [p["symbol"] for p in table.inspect.files().to_pydict()["partition"]]
    ).value_counts()
    assert per_partition["S2"] > 1 and per_partition["S3"] == 1 and "S7" not in per_partition
    landed = iceberg.read("features.t").to_pandas().sort_values("i", ignore_index=True)
    pd.testing.assert_frame_equal(landed, expected)
