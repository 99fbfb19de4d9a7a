"""``raw_ohlcv``: bars from the configured source, one dynamic partition per symbol."""

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource
from pydantic import Field

from assets.resources import DvcResource, HRMSettings
from hrm_core.core.errors import DataError
from hrm_core.data.sources import make_source
from hrm_core.data.versioning import snapshot_path, snapshot_symbols, write_snapshots
from hrm_core.data.warehouse import drop_other_symbols, ensure_tables, replace_symbols, transaction

symbols_partitions = dg.DynamicPartitionsDefinition(name="symbols")


class IngestConfig(dg.Config):
    """Which of the source's files hold this run's symbols (empty: read every file). A production
    ingest run covers a batch of symbols; the command that found the symbols names their files,
    so that no run parses the whole source."""

    files: list[str] = Field(default_factory=list)


WAREHOUSE_POOL = "warehouse"
"""DuckDB has one writer: every asset that writes the warehouse runs in this pool (limit 1)."""


@dg.asset(
    partitions_def=symbols_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    group_name="data",
    kinds={"duckdb", "parquet"},
)
def raw_ohlcv(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    settings: HRMSettings,
    warehouse: DuckDBResource,
    s3: S3Resource,
    dvc: DvcResource,
) -> dg.MaterializeResult:
    """Raw bars per symbol: a snapshot in ``HRM_HOME/data/raw/<symbol>.parquet`` and ``raw.ohlcv``.

    Rows are stored as read (no repair); validation happens downstream. Re-ingesting the same data
    replaces the symbol's rows, so it is idempotent. The warehouse and the snapshots hold exactly
    the current partitions (the source's symbols): a symbol no longer among them is dropped, so
    a run on new data never trains, tests or versions the data of an earlier source.
    """
    hrm = settings.config()
    s3_client = s3.get_client() if hrm.data.path and hrm.data.path.startswith("s3://") else None
    bars = make_source(hrm.data, s3_client, tuple(config.files)).load()
    symbols = list(context.partition_keys)
    present = set(bars["symbol"].unique())
    missing = [s for s in symbols if s not in present]
    if missing:
        raise DataError(
            hrm.data.path or hrm.data.source,
            "partition has no bars in the source (remove the partition or fix the source)",
            missing[0],
        )
    selected = bars[bars["symbol"].isin(symbols)]
    scope = context.instance.get_dynamic_partitions(symbols_partitions.name)
    write_snapshots(selected, dvc.data_dir)
    with warehouse.get_connection() as con:
        ensure_tables(con)
        with transaction(con):
            replace_symbols(con, "raw.ohlcv", selected, symbols)
            dropped = drop_other_symbols(con, scope)
    current = set(scope)
    for symbol in snapshot_symbols(dvc.data_dir):
        if symbol not in current:
            snapshot_path(dvc.data_dir, symbol).unlink()
    if dropped:
        context.log.info(f"dropped symbols that are not in this source: {', '.join(dropped)}")
    return dg.MaterializeResult(  # Dagster stores this with each partition: sizes, not lists of them
        metadata={
            "rows": dg.MetadataValue.int(len(selected)),
            "symbols": dg.MetadataValue.int(len(symbols)),
            "source": hrm.data.source,
            "files": dg.MetadataValue.int(selected["source_file"].nunique()),
            "dropped_symbols": dg.MetadataValue.json(dropped),
        }
    )
