"""``feature_drift_report``: Evidently's ``DataDriftPreset`` on the model's features, the most
recent ``monitoring.drift_window_bars`` bars of every symbol against the production model's
training reference (its fold's training rows; the configured fold while no model is in
production). The drifted share goes to metadata, where the drift sensor reads it, and the check
fails above ``monitoring.max_drift_share``."""

import time

import dagster as dg
import mlflow
import pandas as pd
from dagster_duckdb import DuckDBResource

from assets.registry import promotion_decision
from assets.resources import HRMSettings, MlflowResource
from assets.splits import walk_forward_splits
from hrm_core.core.config import hrm_home
from hrm_core.core.feature_registry import model_features
from hrm_core.core.vocabulary import ALIAS_PRODUCTION

DRIFT_SHARE = "drifted_share"


def drift_frames(
    warehouse: DuckDBResource, columns: list[str], fold: int, window: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference (the fold's training rows) and current (the last ``window`` bars per symbol)."""
    select = ", ".join(f"f.{c}" for c in columns)
    with warehouse.get_connection() as con:
        reference = con.execute(
            f"""SELECT {select} FROM features.hierarchical AS f
                JOIN splits.rows AS r USING (symbol, ts)
                WHERE r.fold = ? AND r.part = 'train'""",
            [fold],
        ).df()
        current = con.execute(
            f"""SELECT {select} FROM (
                    SELECT *, row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) AS age
                    FROM features.hierarchical) AS f
                WHERE f.age <= ?""",
            [window],
        ).df()
    return reference, current


def drifted_share(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[float, list[str], object]:
    """Evidently's share of drifted columns, the drifted column names, and the snapshot. Evidently
    picks the test per column (K-S p-values for small samples, normed Wasserstein distance above
    1,000 reference rows, threshold 0.1), so a short current window is noisier. Evidently is
    imported here: it takes ~2 s to import, and every process that loads the definitions (each
    CLI command, each run's code server) would pay it."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(reference_data=reference, current_data=current)
    share, drifted = 0.0, []
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif config["type"].endswith("ValueDrift"):
            value, threshold = float(metric["value"]), config["threshold"]
            is_p_value = "p_value" in config["method"]  # tests: drift below; distances: above
            if (value < threshold) if is_p_value else (value >= threshold):
                drifted.append(config["column"])
    return share, drifted, snapshot


@dg.asset(deps=[walk_forward_splits, promotion_decision], group_name="monitoring", kinds={"evidently"})
def feature_drift_report(
    context: dg.AssetExecutionContext,
    settings: HRMSettings,
    warehouse: DuckDBResource,
    tracking: MlflowResource,
) -> dg.MaterializeResult:
    """Recent features against the production model's training reference, with Evidently."""
    config = settings.config()
    production = tracking.version_with_alias(ALIAS_PRODUCTION)
    if production is not None:
        with tracking.active():
            meta = mlflow.models.get_model_info(f"models:/{tracking.model_name}@{ALIAS_PRODUCTION}").metadata
        columns = meta["feature_names"][0] + meta["feature_names"][1]
        fold, reference_name = (
            int(meta["fold"]),
            f"production v{production.version}, fold {meta['fold']} train",
        )
    else:
        hf = config.hierarchical_features
        names = model_features(hf.strategic_indicators, hf.tactical_indicators)
        columns = names["strategic"] + names["tactical"]
        fold, reference_name = config.training.fold, f"no production model: fold {config.training.fold} train"
    reference, current = drift_frames(warehouse, columns, fold, config.monitoring.drift_window_bars)
    share, drifted, snapshot = drifted_share(reference, current)
    folder = hrm_home() / "reports" / "drift"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"feature_drift_{time.strftime('%Y%m%dT%H%M%S')}.html"
    snapshot.save_html(str(path))
    with (
        tracking.active(),
        mlflow.start_run(
            run_name="feature-drift", tags={"kind": "monitoring", "dagster.run_id": context.run_id}
        ),
    ):
        mlflow.log_metric(DRIFT_SHARE, share)
        mlflow.log_artifact(str(path), "drift")
    return dg.MaterializeResult(
        metadata={
            DRIFT_SHARE: share,
            "drifted_features": dg.MetadataValue.json(drifted),
            "features": len(columns),
            "reference": reference_name,
            "reference_rows": len(reference),
            "current_rows": len(current),
            "report": dg.MetadataValue.path(str(path)),
            "threshold": config.monitoring.max_drift_share,
        }
    )


@dg.asset_check(asset=feature_drift_report)
def feature_drift_within_threshold(
    context: dg.AssetCheckExecutionContext, settings: HRMSettings
) -> dg.AssetCheckResult:
    """Fails when more than ``monitoring.max_drift_share`` of the features drifted."""
    event = context.instance.get_latest_materialization_event(feature_drift_report.key)
    share = float(event.asset_materialization.metadata[DRIFT_SHARE].value)
    limit = settings.config().monitoring.max_drift_share
    return dg.AssetCheckResult(passed=share <= limit, metadata={DRIFT_SHARE: share, "threshold": limit})
