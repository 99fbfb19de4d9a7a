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
from pipelines.home import BEFORE_RUN, RunTransaction, exclusive_home, recover_dead_runs
from pipelines.resources import local_resources
from tests.test_mlops import TINY, tiny_config

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
def test_a_run_killed_in_a_warehouse_step_leaves_nothing_behind(project: Path, home: Path, step: str):
    config = tiny_config(project)
    assert main(["run", "--job", "data", "--config", config]) == 0
    before = snapshot(home)
    (home / "logs").rename(home / "logs-before")  # only the killed run's log is watched

    run = start_run(project, "--job", "data", "--source", "sample", "--symbols", "SP500", "--config", config)
    wait_for(step_started(home, step), run, f"step {step}")
    kill(run)

    instance = dg.DagsterInstance.get()
    dead = recover_dead_runs(instance, local_resources()["tracking"])
    assert len(dead) == 1 and instance.get_run_by_id(dead[0]).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_run_ids() == set()  # the pool slot is free again
    with exclusive_home(home, "test"), RunTransaction(home) as transaction:
        assert transaction.restored_killed_run
        assert snapshot(home) == before  # no staging table, no half-written table, same data version
        transaction.commit()
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
            **TINY["training"],
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
    step = torch.load(resume, weights_only=True)["step"]
    assert 1 <= step < 40

    (home / "logs").rename(home / "logs-killed-in-training")
    run = start_run(project, "--config", config)
    wait_for(step_started(home, "candidate_model"), run, "registration")
    time.sleep(3.0)  # inside the export and upload of the served program
    kill(run)
    log = next((home / "logs").glob("*.log")).read_text()
    assert "resuming stage basic from its checkpoint at step " in log
    assert "marked 1 run(s) whose process died as failed" in run.stderr.read()

    capsys.readouterr()
    assert main(["run", "--config", config]) == 0
    out = capsys.readouterr().out
    tracking = local_resources()["tracking"]
    client = tracking.client()
    versions = client.search_model_versions("name = 'hrm-trader'")
    assert versions and all(
        {"checkpoint_uri", "data_version", "config_hash", "lineage_key"} <= set(v.tags) for v in versions
    )
    stuck = client.search_runs([tracking.experiment_id()], "attributes.status = 'RUNNING'")
    assert stuck == []  # the killed runs' MLflow runs were marked failed
    assert "registered hrm-trader version" in out

    assert main(["run", "--config", config]) == 0  # same data, config and seed: nothing new
    out = capsys.readouterr().out
    assert "reusing stage full" in out and "not registering again" in out
    assert len(client.search_model_versions("name = 'hrm-trader'")) == len(versions)


def test_a_planted_pickle_model_is_refused_and_never_unpickled(project: Path, home: Path, capsys):
    tracking = local_resources()["tracking"]
    tracking.client()
    tracking.experiment_id()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(torch.nn.Linear(2, 1), name="model", serialization_format="pickle")
    version = mlflow.register_model(info.model_uri, tracking.model_name).version
    tracking.client().set_registered_model_alias(tracking.model_name, "production", version)
    assert main(["predict"]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "never pickles" in err
