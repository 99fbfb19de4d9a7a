"""Running the pipeline's jobs for the CLI: definitions with the command's settings, the instance the
UI reads, one run at a time per home as a transaction, and a job over every symbol partition.
``cli.py`` parses arguments and prints; this module does the work with Dagster."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hrm_core.core.errors import HRMError
from pipelines.home import run_tags


@contextmanager
def guarded(home: Path, command: str, defs, instance) -> Iterator:
    """Hold the home's run lock, clean up after dead runs, and make the block one transaction
    (yields it: ``commit()`` keeps the block's writes)."""
    from pipelines.home import RunTransaction, exclusive_home, recover_home

    with exclusive_home(home, command):
        for note in recover_home(home, instance, defs.resources["tracking"], defs.resources["warehouse"]):
            print(note, file=sys.stderr)
        with RunTransaction(home) as transaction:
            yield transaction


def settings_for(settings_args: dict):
    from assets.resources import HRMSettings

    return HRMSettings(**settings_args)


def definitions_for(settings_args: dict, verbose: bool = False):
    from hrm_core.core.config import hrm_home
    from pipelines.definitions import build_definitions
    from pipelines.progress import cli_logger, log_file
    from pipelines.resources import resources_for_profile

    return build_definitions(
        {**resources_for_profile(), "settings": settings_for(settings_args)},
        loggers={"console": cli_logger(log_file(hrm_home()), verbose)},
    )


def open_instance():
    """The instance the UI reads, for use as a context manager around everything a command does
    with it: Dagster binds its definitions-state storage to an instance only while the instance is
    entered, and an unentered or discarded one left that binding dangling ("Attempted to resolve
    undefined DagsterInstance weakref"). Opening is serialised by a lock in DAGSTER_HOME: two
    commands on a fresh home would otherwise both create its sqlite tables, and one fails."""
    import fcntl

    import dagster as dg

    folder = os.environ.get("DAGSTER_HOME")
    if not folder:
        return dg.DagsterInstance.get()
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / ".open.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return dg.DagsterInstance.get()


CLI_RUN_CONFIG = {"loggers": {"console": {}}}
"""Dagster uses a job's loggers only when the run config names them; this names the CLI's."""


def execute_job(defs, settings_args: dict, job_name: str, config, instance) -> tuple:
    """Discover the source's symbols, make them the symbol partitions, and run ``job_name`` over all
    of them on the instance the UI reads; return the run's result and the ids of the ingest runs.

    Under the production profile the symbols are ingested first, one ``raw_ohlcv`` run per batch of
    symbols and several at once (as the cluster runs one pod per run), all writing the Iceberg
    warehouse in parallel; the job then runs without ``raw_ohlcv``.
    """
    from assets.resources import IcebergWarehouse
    from hrm_core.core.config import hrm_home
    from pipelines.jobs import discover_symbols, partition_range_tags, sync_symbol_partitions

    s3_client = defs.resources["s3"].get_client() if (config.data.path or "").startswith("s3://") else None
    symbols = discover_symbols(config.data, s3_client)
    sync_symbol_partitions(instance, symbols)
    print(
        f"running {job_name} on {len(symbols)} symbol(s) from '{config.data.source}': "
        f"{', '.join(symbols[:8])}{' …' if len(symbols) > 8 else ''} (HRM_HOME={hrm_home()})",
        flush=True,
    )
    job = defs.resolve_job_def(job_name)
    keys = sorted(job.asset_layer.selected_asset_keys)
    ingest_run_ids: list[str] = []
    tags = {**partition_range_tags(symbols), **run_tags()}
    if isinstance(defs.resources["warehouse"], IcebergWarehouse) and any(
        k.path == ["raw_ohlcv"] for k in keys
    ):
        ingest_run_ids = ingest_in_parallel(
            settings_args,
            symbols,
            source_files(config.data, s3_client),
            defs.resources["warehouse"],
            instance,
        )
        keys = [k for k in keys if k.path != ["raw_ohlcv"]]
        tags = run_tags()
    result = job.execute_in_process(
        instance=instance,
        asset_selection=keys if ingest_run_ids else None,
        tags=tags,
        run_config=CLI_RUN_CONFIG,
        raise_on_error=False,
    )
    return result, ingest_run_ids


def source_files(config, s3_client=None) -> dict[str, list[str]]:
    """The files that hold each symbol of a file source (none for other sources), from the load
    that found the symbols: this process parsed every file once, and remembers the result."""
    from hrm_core.data.sources import FileSource, make_source

    source = make_source(config, s3_client)
    if not isinstance(source, FileSource):
        return {}
    bars = source.load()
    return {str(k): sorted(v) for k, v in bars.groupby("symbol")["source_file"].unique().items()}


def ingest_in_parallel(
    settings_args: dict, symbols: list[str], files: dict[str, list[str]], warehouse, instance
) -> list[str]:
    """One ``raw_ohlcv`` run per batch of symbols launched through the Dagster instance, one batch
    per core run at once (the instance's queue may allow fewer); return their run ids. A run
    parses only the files of its symbols (``files``; all of a source that is not files). When
    one fails, every ingest run's warehouse commits are reverted and the failure is raised."""
    import numpy as np

    from hrm_core.core.config import hrm_home
    from pipelines.home import revert_warehouse_runs
    from pipelines.launch import run_partitions

    workers = max(1, min(len(symbols), os.cpu_count() or 1))
    cut = np.array_split(np.array(symbols, dtype=object), workers)  # contiguous: a key range each
    batches = {(part[0], part[-1]): part.tolist() for part in cut if len(part)}
    settings = {"resources": {"settings": {"config": {**settings_args, "project_dir": os.getcwd()}}}}
    failed: list[str] = []

    def partition(batch: list[str]) -> str | tuple[str, str]:
        return batch[0] if len(batch) == 1 else (batch[0], batch[-1])

    def run_config(key: str | tuple[str, str]) -> dict:
        batch = batches[key if isinstance(key, tuple) else (key, key)]
        batch_files = sorted({name for symbol in batch for name in files.get(symbol, [])})
        return {**settings, "ops": {"raw_ohlcv": {"config": {"files": batch_files}}}}

    def batch_done(key: str | tuple[str, str], run) -> None:
        if run.status.value != "SUCCESS":
            failed.append(key if isinstance(key, str) else f"{key[0]}…{key[1]}")

    runs = run_partitions(
        instance,
        hrm_home(),
        "data_job",
        [partition(batch) for batch in batches.values()],
        run_config,
        run_tags(),
        workers,
        batch_done,
        assets=["raw_ohlcv"],
    )
    run_ids = [run.run_id for run in runs]
    if failed:
        revert_warehouse_runs(warehouse, run_ids)
        raise HRMError(f"ingest of raw_ohlcv[{failed[0]}] failed; see its run in the Dagster UI")
    print(
        f"ingested {len(symbols)} symbol(s) in parallel runs, {len(batches)} batch(es), {workers} at once",
        flush=True,
    )
    return run_ids
