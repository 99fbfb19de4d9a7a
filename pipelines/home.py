"""The state folder's guard: one CLI run at a time per ``HRM_HOME``, dead runs cleaned up, and a
run's writes to the warehouse and the raw snapshots undone when it fails or is killed.

Why a lock and a snapshot rather than finer transactions: every step already writes in one DuckDB
transaction, but a run is many steps (ingest, validation, features, ...) and a failure in a later
one must not leave the earlier ones applied. The warehouse and the snapshots are small next to the
time a run takes, so a copy taken under the lock is the simplest thing that makes a whole run
atomic, survives ``kill -9`` (the next run finds the copy and puts it back) and needs no service.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from hrm_core.core.config import hrm_home
from pipelines.threads import pid_alive

LOCK_FILE = "run.lock"
BEFORE_RUN = ".before-run"
GUARDED = ("warehouse.duckdb", "warehouse.duckdb.wal", "data", "data.dvc")
"""What a run may change and a failed run must give back: the warehouse and the raw snapshots with
their DVC pointer. The DVC cache and remote are content-addressed, so extra entries are harmless;
checkpoints are kept on purpose, so that a rerun resumes."""
PID_TAG, HOST_TAG = "hrm/pid", "hrm/host"


def prepare_home() -> Path:
    """Create ``HRM_HOME`` and its Dagster instance folder: a pool limit of 1 for DuckDB, and at
    most as many queued runs at once as the machine has cores (runs launched through the instance,
    e.g. ``evaluate``'s cells; edit ``dagster.yaml`` to change it)."""
    home = hrm_home()
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    (home / "reports").mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        tmp = instance_yaml.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(
            yaml.safe_dump(
                {
                    "telemetry": {"enabled": False},
                    "concurrency": {
                        "pools": {"default_limit": 1},
                        "runs": {"max_concurrent_runs": os.cpu_count() or 1},
                    },
                }
            )
        )
        os.replace(tmp, instance_yaml)
    return home


def run_tags() -> dict[str, str]:
    """Tags that let a later run tell whether the process behind a STARTED run is still alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


@contextmanager
def exclusive_home(home: Path, command: str, wait: bool = True) -> Iterator[bool]:
    """Hold ``HRM_HOME``'s run lock for the block (yields True); wait, and say so, while another
    run holds it, or with ``wait=False`` yield False at once and hold nothing.

    The lock is an ``flock``: the kernel releases it when its holder dies, even by ``kill -9``,
    so a dead run can never block the next one.
    """
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            if not wait:
                yield False
                return
            print(f"waiting: {home} is in use by {holder}; this run starts when it ends", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} (`hrm-trading {command}`, since {time.strftime('%H:%M:%S')})")
        lock.flush()
        try:
            yield True
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)


class RunTransaction:
    """Copy the guarded state on entry; put it back unless ``commit()`` was called.

    Call only while holding :func:`exclusive_home`. A copy left by a killed run is restored on
    entry, before the new copy is taken, so a killed run ends exactly like a failed one.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.backup = home / BEFORE_RUN
        self.restored_killed_run = False
        self._committed = False

    def __enter__(self) -> RunTransaction:
        self.restored_killed_run = self.restore_killed_run()
        tmp = self.home / f"{BEFORE_RUN}.tmp"
        tmp.mkdir()
        present = []
        for name in GUARDED:
            live = self.home / name
            if live.is_dir():
                shutil.copytree(live, tmp / name)
            elif live.exists():
                shutil.copy2(live, tmp / name)
            else:
                continue
            present.append(name)
        (tmp / "manifest.json").write_text(json.dumps({"present": present}))
        os.replace(tmp, self.backup)
        return self

    def restore_killed_run(self) -> bool:
        """Put back the copy a killed run left; True when there was one."""
        shutil.rmtree(self.home / f"{BEFORE_RUN}.tmp", ignore_errors=True)  # killed while copying
        if not self.backup.exists():
            return False
        self.rollback()
        return True

    def commit(self) -> None:
        self._committed = True

    def __exit__(self, *exc: object) -> None:
        if self._committed:
            shutil.rmtree(self.backup)
        else:
            self.rollback()

    def rollback(self) -> None:
        """Put every guarded path back as it was; safe to repeat if it is itself interrupted."""
        present = set(json.loads((self.backup / "manifest.json").read_text())["present"])
        for name in GUARDED:
            saved, live = self.backup / name, self.home / name
            if name in present and not saved.exists():
                continue  # moved back by an interrupted rollback
            if live.is_dir():
                shutil.rmtree(live)
            elif live.exists():
                live.unlink()
            if name in present:
                os.replace(saved, live)
        shutil.rmtree(self.backup)


def revert_warehouse_runs(warehouse, run_ids: list[str]) -> int:
    """Undo the Iceberg commits of ``run_ids`` (a failed production run: its ingest runs and
    itself); the local DuckDB file is restored by :class:`RunTransaction` instead. Returns the
    partitions restored."""
    from assets.resources import IcebergWarehouse

    if not isinstance(warehouse, IcebergWarehouse):
        return 0
    return warehouse.iceberg().revert_runs(run_ids)


def recover_home(home: Path, instance, tracking, warehouse=None) -> list[str]:
    """What a command that finds the home free does first: restore a killed run's copy and clean
    up after dead runs (and, on the production warehouse, undo their commits). Call while holding the
    lock; returns what was done, for the user."""
    done = []
    if RunTransaction(home).restore_killed_run():
        done.append("restored the warehouse and raw data to before a killed run")
    dead = recover_dead_runs(instance, tracking)
    if dead:
        done.append(f"marked {len(dead)} run(s) whose process died as failed: {', '.join(dead)}")
        undone = revert_warehouse_runs(warehouse, dead)
        if undone:
            done.append(f"restored {undone} warehouse partition(s) those runs wrote")
    return done


def recover_dead_runs(instance, tracking) -> list[str]:
    """Mark the CLI runs whose process died as failed, free their concurrency slots and fail their
    MLflow runs; returns their run ids. Runs of live processes (and UI runs) are left alone."""
    import dagster as dg

    unfinished = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    dead = []
    for run in instance.get_runs(dg.RunsFilter(statuses=unfinished, tags={HOST_TAG: socket.gethostname()})):
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid and pid_alive(pid):
            continue
        instance.report_run_failed(run, message=f"the process running it (pid {pid}) died; marked failed")
        dead.append(run.run_id)
    for run_id in instance.event_log_storage.get_concurrency_run_ids():
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    for run_id in dead:
        fail_mlflow_runs(tracking, run_id)
    return dead


def fail_mlflow_runs(tracking, dagster_run_id: str) -> None:
    """Mark the MLflow runs of a failed or dead Dagster run that are still RUNNING as FAILED."""
    client = tracking.client()
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        return
    for run in client.search_runs(
        [experiment.experiment_id],
        f"tags.`dagster.run_id` = '{dagster_run_id}' AND attributes.status = 'RUNNING'",
    ):
        client.set_terminated(run.info.run_id, "FAILED")
