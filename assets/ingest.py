"""``raw_ohlcv``: bars from the configured source, one dynamic partition per symbol."""

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from assets.resources import DvcResource, HRMSettings
from hrm_core.core.errors import DataError
from hrm_core.data.sources import make_source
from hrm_core.data.versioning import snapshot_path, snapshot_symbols, write_snapshot
from hrm_core.data.warehouse import drop_other_symbols, ensure_tables, replace_symbols, transaction

symbols_partitions = dg.DynamicPartitionsDefinition(name="symbols")
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
    config = settings.config()
    s3_client = s3.get_client() if config.data.path and config.data.path.startswith("s3://") else None
    bars = make_source(config.data, s3_client).load()
    symbols = list(context.partition_keys)
    missing = [s for s in symbols if s not in set(bars["symbol"])]
    if missing:
        raise DataError(
            config.data.path or config.data.source,
            "partition has no bars in the source (remove the partition or fix the source)",
            missing[0],
        )
    selected = bars[bars["symbol"].isin(symbols)]
    scope = context.instance.get_dynamic_partitions(symbols_partitions.name)
    for symbol, frame in selected.groupby("symbol"):
        write_snapshot(frame, snapshot_path(dvc.data_dir, str(symbol)))
    with warehouse.get_connection() as con:
        ensure_tables(con)
        with transaction(con):
            replace_symbols(con, "raw.ohlcv", selected, symbols)
            dropped = drop_other_symbols(con, scope)
    for symbol in snapshot_symbols(dvc.data_dir):
        if symbol not in scope:
            snapshot_path(dvc.data_dir, symbol).unlink()
    if dropped:
        context.log.info(f"dropped symbols that are not in this source: {', '.join(dropped)}")
    counts = selected.groupby("symbol").size()
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(len(selected)),
            "rows_per_symbol": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
            "source": config.data.source,
            "files": dg.MetadataValue.json(sorted(selected["source_file"].unique().tolist())),
            "dropped_symbols": dg.MetadataValue.json(dropped),
        }
    )
