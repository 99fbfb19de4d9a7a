"""``warehouse_maintenance``: keep the Iceberg warehouse's reads independent of its history.

Every commit adds a snapshot, a manifest and small data files; a reader plans over all of them.
The maintenance pass compacts each partition written in several files into one, expires old
snapshots and deletes the files nothing kept references (writers that died mid-commit, expired
snapshots' data). A snapshot a registered model version names (its ``warehouse_snapshots`` tag)
is never expired, so ``hrm-trading data show --version N`` can always read it back.
"""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.resources import IcebergWarehouse, MlflowResource

SNAPSHOT_TAG = "warehouse_snapshots"


class MaintenanceConfig(dg.Config):
    """Iceberg's own defaults: snapshots older than 5 days expire; unreferenced files are deleted
    once 3 days old (younger ones may belong to a commit still in flight)."""

    expire_after_hours: float = 120.0
    orphan_after_hours: float = 72.0


def registered_snapshots(tracking: MlflowResource) -> set[int]:
    """Every snapshot id a registered version of the model names."""
    client = tracking.client()
    named: set[int] = set()
    for version in client.search_model_versions(f"name = '{tracking.model_name}'"):
        recorded = version.tags.get(SNAPSHOT_TAG)
        if recorded:
            named.update(s for s in json.loads(recorded).values() if s is not None)
    return named


@dg.op
def warehouse_maintenance(
    context: dg.OpExecutionContext,
    config: MaintenanceConfig,
    warehouse: DuckDBResource,
    tracking: MlflowResource,
) -> dg.Output:
    """Compact, expire and remove orphans on the Iceberg warehouse; a checkpoint on the local
    DuckDB file (which keeps no snapshots, so there is nothing else to maintain)."""
    from datetime import timedelta

    if not isinstance(warehouse, IcebergWarehouse):
        with warehouse.get_connection() as con:
            con.execute("CHECKPOINT")
        context.log.info("the local DuckDB warehouse keeps no snapshots: checkpointed its write-ahead log")
        return dg.Output({}, metadata={"warehouse": "duckdb", "checkpointed": True})
    keep = registered_snapshots(tracking)
    done = warehouse.iceberg().maintain(
        keep,
        older_than=timedelta(hours=config.expire_after_hours),
        orphan_age=timedelta(hours=config.orphan_after_hours),
    )
    for table in sorted(done.kept):
        context.log.info(
            f"{table}: compacted {done.compacted[table]} partition(s), expired {done.expired[table]} "
            f"snapshot(s), removed {done.orphans_removed[table]} orphan file(s); "
            f"{len(done.kept[table])} snapshot(s) kept"
        )
    return dg.Output(
        {"kept": done.kept},
        metadata={
            "snapshots_named_by_versions": len(keep),
            "compacted_partitions": dg.MetadataValue.json(done.compacted),
            "expired_snapshots": dg.MetadataValue.json(done.expired),
            "orphan_files_removed": dg.MetadataValue.json(done.orphans_removed),
            "snapshots_kept": dg.MetadataValue.json({t: len(s) for t, s in done.kept.items()}),
        },
    )
