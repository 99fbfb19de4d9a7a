"""``training_labels``: forward returns at the supervision horizons and multi-task tags."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.features import hierarchical_features
from assets.ingest import WAREHOUSE_POOL
from assets.resources import HRMSettings
from hrm_core.features.labels import build_labels


@dg.asset(deps=[hierarchical_features], pool=WAREHOUSE_POOL, group_name="features", kinds={"duckdb", "sql"})
def training_labels(settings: HRMSettings, warehouse: DuckDBResource) -> dg.MaterializeResult:
    """``labels.forward``: returns from the next bar's open over each horizon, and the task tag."""
    config = settings.config().labels
    with warehouse.get_connection() as con:
        rows = build_labels(con, config)
        tasks = dict(
            con.execute(
                "SELECT coalesce(task, 'unlabelled'), count(*) FROM labels.forward GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "horizons": dg.MetadataValue.json(config.horizons),
            "task_counts": dg.MetadataValue.json({k: int(v) for k, v in tasks.items()}),
        }
    )
