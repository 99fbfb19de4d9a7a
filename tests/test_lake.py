"""The production warehouse (Parquet lake): writers of different symbols in parallel processes lose
and duplicate nothing, a writer that dies before its commit leaves the warehouse as it was, a
block that raises commits nothing, and the commits of a failed run, or of a run whose process
died, are undone."""

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from assets.resources import LakeWarehouse
from hrm_core.data.lake import Lake
from hrm_core.data.warehouse import ensure_tables, replace_symbols, transaction

SYMBOLS = [f"S{i}" for i in range(6)]


def bars(symbol: str, n: int = 50) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": pd.date_range("2020-01-01", periods=n, freq="D"),
            **{c: 1.0 + i for i, c in enumerate(("open", "high", "low", "close", "volume"))},
            "source_file": f"{symbol}.csv",
            "source_row": range(n),
        }
    )


def ingest(root: str, symbol: str, run_id: str, n: int = 50) -> None:
    """One partition writer, as a raw_ohlcv step pod: load, replace its symbol's rows, commit."""
    warehouse = LakeWarehouse(root=root, cache_dir=str(Path(root).parent / "cache"))
    warehouse._run_id = run_id
    with warehouse.get_connection() as con:
        ensure_tables(con)
        with transaction(con):
            replace_symbols(con, "raw.ohlcv", bars(symbol, n), [symbol])


def rows(root: str) -> pd.DataFrame:
    con = duckdb.connect()
    Lake(root, Path(root).parent / "cache").load_into(con)
    return con.execute("SELECT symbol, ts, source_row FROM raw.ohlcv").df()


def test_parallel_partition_writers_lose_and_duplicate_nothing(tmp_path):
    root = str(tmp_path / "lake")
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        list(pool.map(ingest, [root] * len(SYMBOLS), SYMBOLS, [f"run-{s}" for s in SYMBOLS]))
    written = rows(root)
    assert sorted(written["symbol"].unique()) == SYMBOLS
    assert written.groupby("symbol").size().tolist() == [50] * len(SYMBOLS)
    assert not written.duplicated().any()
    ingest(root, "S0", "again")  # re-ingesting one symbol replaces its rows, never adds
    assert len(rows(root)) == 50 * len(SYMBOLS)


def test_a_writer_killed_before_its_commit_leaves_the_warehouse_as_it_was(tmp_path, monkeypatch):
    root = str(tmp_path / "lake")
    ingest(root, "S0", "first")
    before = rows(root)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while committing")

    monkeypatch.setattr(Lake, "_put", killed)  # data objects are written, the commit never is
    with pytest.raises(KeyboardInterrupt):
        ingest(root, "S1", "second")
    monkeypatch.undo()
    assert list((tmp_path / "lake" / "data" / "raw.ohlcv").glob("S1-*.parquet"))  # orphans, unread
    pd.testing.assert_frame_equal(rows(root), before)


def test_a_block_that_raises_commits_nothing_and_a_failed_run_is_reverted(tmp_path):
    root = str(tmp_path / "lake")
    warehouse = LakeWarehouse(root=root, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(RuntimeError), warehouse.get_connection() as con:
        ensure_tables(con)
        replace_symbols(con, "raw.ohlcv", bars("S0"), ["S0"])
        raise RuntimeError("a failing step")
    assert warehouse.lake().commits() == []
    ingest(root, "S0", "good")
    ingest(root, "S0", "same-data")  # unchanged data: nothing to commit
    assert len(warehouse.lake().commits()) == 1
    ingest(root, "S1", "failed-run")
    ingest(root, "S0", "failed-run", n=20)
    assert Lake(root, tmp_path / "cache").revert_run("failed-run") == 2
    assert rows(root).groupby("symbol").size().to_dict() == {"S0": 50}


def test_the_commits_of_a_run_whose_process_died_are_undone_by_the_next_command(tmp_path):
    import socket

    import dagster as dg

    from pipelines.home import HOST_TAG, PID_TAG, recover_home
    from pipelines.resources import local_resources

    root = str(tmp_path / "lake")
    warehouse = LakeWarehouse(root=root, cache_dir=str(tmp_path / "cache"))
    ingest(root, "S0", "finished-run")
    with dg.instance_for_test() as instance:
        dead = instance.create_run_for_job(  # never finished; its process (pid) is gone
            dg.GraphDefinition("g").to_job(), tags={PID_TAG: "999999999", HOST_TAG: socket.gethostname()}
        )
        ingest(root, "S1", dead.run_id)
        tracking = local_resources(tmp_path / "home")["tracking"]
        notes = recover_home(tmp_path / "home", instance, tracking, warehouse)
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert "undid 1 warehouse commit(s) of those runs" in notes
    assert sorted(rows(root)["symbol"].unique()) == ["S0"]
