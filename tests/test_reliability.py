"""Reliability with real processes: ``kill -9`` at chosen steps, two runs at once on one home, a
killed training stage that resumes, a kill during registration, and a planted pickle model.

Each kill is of a real ``hrm-trading run`` process, chosen by watching its log file for the
step's start (a step boundary) or for a checkpoint file (mid-step), so what is tested is what a
user's ``Ctrl-C``-less crash or an OOM kill does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pytest
import torch

from hrm_core.data.warehouse import TABLE_DDL
from pipelines.cli import main
from pipelines.home import BEFORE_RUN
from pipelines.resources import local_resources
from tests.test_mlops import tiny_config

pytestmark = pytest.mark.slow

TABLES = (*TABLE_DDL, "features.hierarchical", "labels.forward", "splits.rows")


def snapshot(home: Path) -> dict[str, object]:
    """Row counts of every warehouse table, the tables' names (a staging table would show) and
    the data version."""
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    names = sorted(
        r[0] for r in con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall()
    )
    con.close()
    return {"counts": counts, "tables": names, "data.dvc": (home / "data.dvc").read_text()}


def start_run(project: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HRM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def step_started(home: Path, step: str):
    def started() -> bool:
        logs = list((home / "logs").glob("*.log"))
        return any(f'Started execution of step "{step}"' in p.read_text() for p in logs)

    return started


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture
def home(project: Path) -> Path:
    return project.parent / "hrm_home"


@pytest.mark.parametrize("step", ["raw_ohlcv", "hierarchical_features", "walk_forward_splits"])
def test_a_run_killed_in_a_warehouse_step_leaves_nothing_behind(project: Path, home: Path, step: str, capsys):
    config = tiny_config(project)
    assert main(["run", "--job", "data", "--config", config]) == 0
    before = snapshot(home)
    (home / "logs").rename(home / "logs-before")  # only the killed run's log is watched

    run = start_run(project, "--job", "data", "--source", "sample", "--symbols", "SP500", "--config", config)
    wait_for(step_started(home, step), run, f"step {step}")
    kill(run)

    assert (home / BEFORE_RUN).exists()
    assert main(["status"]) == 0  # the next command that finds the home free cleans up
    out = capsys.readouterr().out
    assert "restored the warehouse and raw data to before a killed run" in out
    with dg.DagsterInstance.get() as instance:
        (dead,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert f"marked 1 run(s) whose process died as failed: {dead.run_id}" in out
        assert instance.event_log_storage.get_concurrency_run_ids() == set()  # the pool slot is free again
    assert snapshot(home) == before  # no staging table, no half-written table, same data version
    assert not (home / BEFORE_RUN).exists()
    assert main(["run", "--job", "data", "--config", config]) == 0  # the next run is not blocked


def test_two_runs_at_once_on_one_home_both_succeed_one_after_the_other(project: Path, home: Path):
    config = tiny_config(project)
    runs = [start_run(project, "--job", "data", "--config", config) for _ in range(2)]
    outcomes = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outcomes
    waited = [err for _, err in outcomes if "waiting: " in err]
    assert len(waited) == 1 and "in use by pid" in waited[0]
    assert all("== summary ==" in out for out, _ in outcomes)
    assert snapshot(home)["counts"]["clean.ohlcv"] == 2 * 5031


def test_a_killed_training_stage_resumes_and_a_kill_during_registration_leaves_no_half_version(
    project: Path, home: Path, capsys
):
    config = tiny_config(
        project,
        training={
            "checkpoint_every": 1,
            "curriculum": [
                {"name": "basic", "H_cycles": 1, "L_cycles": 2, "episodes": 160},
                {"name": "advanced", "H_cycles": 1, "L_cycles": 2, "episodes": 8},
                {"name": "full", "H_cycles": 1, "L_cycles": 2, "act": True, "episodes": 8},
            ],
        },
    )
    run = start_run(project, "--config", config)
    checkpoints = home / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("*/resume/last.pt")), run, "a stage-1 checkpoint")
    time.sleep(0.5)
    kill(run)
    (resume,) = checkpoints.glob("*/resume/last.pt")
    saved = torch.load(resume, weights_only=True)
    step = saved["step"]
    assert saved["stage"] == 0  # the stage asset's one-stage curriculum was still running, not done
    assert 1 <= step < 40  # killed inside stage 1 (40 steps), after its first checkpoint

    (home / "logs").rename(home / "logs-killed-in-training")
    run = start_run(project, "--config", config)
    wait_for(step_started(home, "candidate_model"), run, "registration")
    time.sleep(3.0)  # inside the export and upload of the served program
    kill(run)
    log = next((home / "logs").glob("*.log")).read_text()
    assert f"resuming stage basic from its checkpoint at step {step} " in log  # where the kill left it
    assert "marked 1 run(s) whose process died as failed" in run.stderr.read()
    tracking = local_resources()["tracking"]
    client = tracking.client()
    lineage = {"checkpoint_uri", "data_version", "config_hash", "lineage_key"}
    left_by_kill = client.search_model_versions("name = 'hrm-trader'")
    assert all(lineage <= set(v.tags) for v in left_by_kill)  # whole or absent, never half

    capsys.readouterr()
    assert main(["run", "--config", config]) == 0
    out = capsys.readouterr().out
    versions = client.search_model_versions("name = 'hrm-trader'")
    assert len(versions) == 1 and lineage <= set(versions[0].tags)
    stuck = client.search_runs([tracking.experiment_id()], "attributes.status = 'RUNNING'")
    assert stuck == []  # the killed runs' MLflow runs were marked failed
    # The kill may land before or after the version was created (machine speed); either way one whole version.
    verb = "already registered (same lineage):" if left_by_kill else "registered"
    assert f"{verb} hrm-trader version {versions[0].version} " in out

    assert main(["run", "--config", config]) == 0  # same data, config and seed: nothing new
    out = capsys.readouterr().out
    assert "reusing stage full" in out and "not registering again" in out
    assert len(client.search_model_versions("name = 'hrm-trader'")) == len(versions)

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "data version (DVC md5)" in status and f"registry hrm-trader: {len(versions)} version(s)" in status
    newest = max(int(v.version) for v in versions)
    assert main(["data", "restore", "--model-version", str(newest)]) == 0
    restored = home / "restored" / f"v{newest}" / "data" / "raw"
    assert {p.name: p.read_bytes() for p in restored.iterdir()} == {
        p.name: p.read_bytes() for p in (home / "data" / "raw").iterdir()
    }
    if tracking.version_with_alias("production") is None:  # the policy rejected the candidate
        capsys.readouterr()
        assert main(["predict"]) == 2
        err = capsys.readouterr().err
        assert f"version {newest}, was rejected" in err and "--model-alias staging" in err


def test_a_planted_pickle_model_is_refused_and_never_unpickled(project: Path, home: Path, capsys):
    tracking = local_resources()["tracking"]
    with tracking.active(), mlflow.start_run():
        info = mlflow.pytorch.log_model(torch.nn.Linear(2, 1), name="model", serialization_format="pickle")
        version = mlflow.register_model(info.model_uri, tracking.model_name).version
    tracking.client().set_registered_model_alias(tracking.model_name, "production", version)
    assert main(["predict"]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "never pickles" in err


def test_each_run_reads_its_own_values_and_a_rerun_of_one_asset_reads_the_latest(tmp_path: Path):
    from pipelines.storage import RunJsonIOManager

    @dg.asset
    def upstream(context) -> dict:  # unannotated: this module's annotations are strings
        return {"value": context.run.tags["value"]}

    @dg.asset
    def downstream(upstream: dict) -> dict:
        return upstream

    io_manager = RunJsonIOManager(base_dir=str(tmp_path / "outputs"))
    with dg.instance_for_test() as instance:
        runs = [
            dg.materialize(
                [upstream, downstream],
                resources={"io_manager": io_manager},
                instance=instance,
                tags={"value": v},
            )
            for v in ("a", "b")
        ]
        assert [r.output_for_node("downstream") for r in runs] == [{"value": "a"}, {"value": "b"}]
        files = sorted(
            p.relative_to(tmp_path / "outputs").as_posix() for p in (tmp_path / "outputs").rglob("*")
        )
        assert files == sorted(
            [f"{r.run_id}" for r in runs]
            + [f"{r.run_id}/{a}.json" for r in runs for a in ("upstream", "downstream")]
        )
        again = dg.materialize(
            [upstream, downstream],
            selection=[downstream],
            resources={"io_manager": io_manager},
            instance=instance,
        )
        assert again.output_for_node("downstream") == {"value": "b"}


def test_a_dataset_version_is_restored_byte_for_byte_after_newer_data(tmp_path: Path):
    from hrm_core.data.versioning import restore_data, version_data

    repo, remote = tmp_path / "home", tmp_path / "remote"
    (repo / "data" / "raw").mkdir(parents=True)
    (repo / "data" / "raw" / "A.parquet").write_bytes(b"version one")
    first = version_data(repo, str(remote))
    (repo / "data" / "raw" / "A.parquet").write_bytes(b"version two, newer")
    (repo / "data" / "raw" / "B.parquet").write_bytes(b"another symbol")
    assert version_data(repo, str(remote)).md5 != first.md5
    restored = restore_data(first.md5, str(remote), tmp_path / "restored")
    assert sorted(p.name for p in (restored / "raw").iterdir()) == ["A.parquet"]
    assert (restored / "raw" / "A.parquet").read_bytes() == b"version one"


def test_processes_share_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pipelines.threads import share_of_cores

    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    others = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        registry = tmp_path / f"hrm-trading-{os.getuid()}"
        registry.mkdir(parents=True, exist_ok=True)
        for other in others:
            (registry / str(other.pid)).touch()
        (registry / "999999999").touch()  # a dead process's file is cleaned up, not counted
        assert share_of_cores(cores=6) == 2
        assert not (registry / "999999999").exists()
    finally:
        for other in others:
            other.kill()
