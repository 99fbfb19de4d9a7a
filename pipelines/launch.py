"""Work over many partitions, launched through the Dagster instance: one run per partition,
created from the code location (``pipelines.definitions``), submitted to the instance's run
coordinator and started by its run launcher — a process per run on this machine, a pod per run
under the Kubernetes run launcher. The instance's queue and its ``max_concurrent_runs`` decide how
many run at once; ``at_once`` only keeps this command from queueing more than that many itself.

Queued runs need a Dagster daemon. The production profile's stack and cluster run one; elsewhere
(a laptop without ``make ui``) one is started for the command's duration and stopped after.

The code location here is Dagster's own workspace machinery (``dagster job launch`` uses the same
calls), so a run created here is indistinguishable from one launched in the UI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext
from dagster._core.workspace.load_target import ModuleTarget

CODE_MODULE, CODE_ATTRIBUTE = "pipelines.definitions", "defs"
POLL_SECONDS = 2.0

Partition = str | Mapping[str, str] | tuple[str, str]
"""A partition key, a multi-partition key as {dimension: key}, or a (first, last) range of keys
that one run covers."""


@contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator[WorkspaceRequestContext]:
    """The project's code location as the daemon and the UI load it (``workspace.yaml``)."""
    target = ModuleTarget(
        module_name=CODE_MODULE, attribute=CODE_ATTRIBUTE, working_directory=os.getcwd(), location_name=None
    )
    with WorkspaceProcessContext(instance, target, version=dg.__version__, read_only=False) as context:
        yield context.create_request_context()


@contextmanager
def queue_served(home: Path) -> Iterator[None]:
    """A daemon that launches the instance's queued runs, for the block: the stack's or the
    cluster's under the production profile, else one started here (its log in ``home/logs``)."""
    if os.environ.get("HRM_PROFILE") == "production":
        yield
        return
    (home / "logs").mkdir(parents=True, exist_ok=True)
    with open(home / "logs" / "dagster-daemon.log", "ab") as log:
        daemon = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-daemon")),
                "run",
                "-m",
                CODE_MODULE,
                "-a",
                CODE_ATTRIBUTE,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def create_run(
    instance: dg.DagsterInstance,
    workspace: WorkspaceRequestContext,
    job_name: str,
    partition: Partition,
    run_config: Mapping[str, object],
    tags: Mapping[str, str],
    assets: Sequence[str] | None = None,
) -> dg.DagsterRun:
    """A run of ``job_name`` (only ``assets`` of it, when given) for ``partition``, not yet started."""
    location = next(iter(workspace.get_code_location_entries().values())).code_location
    repository = next(iter(location.get_repositories().values()))
    asset_selection = [dg.AssetKey(a) for a in assets] if assets else None
    selector = JobSubsetSelector(
        location_name=location.name,
        repository_name=repository.name,
        job_name=job_name,
        op_selection=None,
        asset_selection=asset_selection,
    )
    job = location.get_job(selector)
    plan = location.get_execution_plan(
        job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
    ).execution_plan_snapshot
    if isinstance(partition, tuple):
        partition_tags = {
            "dagster/asset_partition_range_start": partition[0],
            "dagster/asset_partition_range_end": partition[1],
        }
    elif isinstance(partition, Mapping):
        partition_tags = {"dagster/partition": str(dg.MultiPartitionKey(dict(partition)))}
    else:
        partition_tags = {"dagster/partition": partition}
    return instance.create_run(
        job_name=job_name,
        run_id=None,
        run_config=run_config,
        resolved_op_selection=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags={**job.tags, **tags, **partition_tags},
        job_snapshot=job.job_snapshot,
        execution_plan_snapshot=plan,
        parent_job_snapshot=job.parent_job_snapshot,
        remote_job_origin=job.get_remote_origin(),
        job_code_origin=job.get_python_origin(),
        asset_selection=frozenset(asset_selection) if asset_selection else None,
        asset_check_selection=None,
        asset_graph=repository.asset_graph,
    )


def run_partitions(
    instance: dg.DagsterInstance,
    home: Path,
    job_name: str,
    partitions: Sequence[Partition],
    run_config: Mapping[str, object] | Callable[[Partition], Mapping[str, object]],
    tags: Mapping[str, str],
    at_once: int,
    on_done: Callable[[Partition, dg.DagsterRun], None],
    assets: Sequence[str] | None = None,
) -> list[dg.DagsterRun]:
    """One run of ``job_name`` per partition through the instance's queue, ``at_once`` of them
    submitted at a time; waits for all, calling ``on_done`` as each finishes. Returns the runs.
    ``run_config`` is every run's, or a function giving each partition's."""
    waiting, running, finished = list(partitions), {}, []
    with queue_served(home), code_location(instance) as workspace:
        while waiting or running:
            while waiting and len(running) < at_once:
                partition = waiting.pop(0)
                config = run_config(partition) if callable(run_config) else run_config
                run = create_run(instance, workspace, job_name, partition, config, tags, assets)
                instance.submit_run(run.run_id, workspace)
                running[run.run_id] = partition
            time.sleep(POLL_SECONDS)
            for run_id in list(running):
                run = instance.get_run_by_id(run_id)
                if run is not None and run.is_finished:
                    finished.append(run)
                    on_done(running.pop(run_id), run)
    return finished
