"""Jobs and schedules."""

import os
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from assets.evaluation import evaluation_cell, evaluation_partitions, evaluation_report
from assets.features import hierarchical_features
from assets.ingest import raw_ohlcv, symbols_partitions
from assets.labels import training_labels
from assets.maintenance import warehouse_maintenance
from assets.monitoring import DRIFT_SHARE, feature_drift_report
from assets.paper import BEYOND_EXPECTATION, paper_account
from assets.paper_loop import default_source
from assets.registry import backtest_report, candidate_model, promotion_decision
from assets.resources import HRMSettings
from assets.rl import rl_finetune_asset
from assets.splits import walk_forward_splits
from assets.training import checkpoint_check, curriculum_assets
from assets.validation import clean_ohlcv
from assets.versioning import dataset_version
from hrm_core.core.config import DataConfig, StageConfig
from hrm_core.data.sources import make_source

DATA_ASSETS = [
    raw_ohlcv,
    clean_ohlcv,
    dataset_version,
    hierarchical_features,
    training_labels,
    walk_forward_splits,
]

MONITORING_ASSETS = [feature_drift_report]
PAPER_ASSETS = [paper_account]
EVALUATION_ASSETS = [evaluation_cell, evaluation_report]


def training_graph(
    curriculum: list[StageConfig],
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The training graph for ``curriculum``: one asset per stage (the last one checked: its model
    loads and serves), RL, the candidate, its backtest and the promotion decision."""
    stages = curriculum_assets(curriculum)
    assets = [*stages, rl_finetune_asset(stages[-1]), candidate_model, backtest_report, promotion_decision]
    return assets, [checkpoint_check(stages[-1])]


JOB_GROUPS = {
    "data_job": ("data", "features"),
    "train_job": ("training", "registry"),
    "full_job": ("data", "features", "training", "registry", "monitoring"),
}
"""The asset groups of each job the CLI runs (one source for the jobs' selections)."""

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.groups(*JOB_GROUPS["data_job"]),
    description="Ingest → validate → version → features → labels → walk-forward splits.",
)
train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.groups(*JOB_GROUPS["train_job"]),
    description="Curriculum stages → candidate (alias staging) → backtest → promotion (alias production).",
)
full_job = dg.define_asset_job(
    "full_job",
    selection=dg.AssetSelection.groups(*JOB_GROUPS["full_job"]),
    description="The whole graph: data, training, registry and drift monitoring.",
)

evaluation_cell_job = dg.define_asset_job(
    "evaluation_cell_job",
    selection=dg.AssetSelection.assets(evaluation_cell),
    partitions_def=evaluation_partitions,
    description="One fold × seed cell: every configured model trained and tested on the fold's block.",
    # one step, already in its own run process (or pod): a step process of its own would import the
    # whole code location a second time (~25 s a cell on 2 cores) and place nothing differently
    executor_def=dg.in_process_executor,
)
evaluation_report_job = dg.define_asset_job(
    "evaluation_report_job",
    selection=dg.AssetSelection.assets(evaluation_report),
    description="Gather the cells into the evaluation report (means, paired CIs, DSR).",
)

JOBS_BY_SIZE = ("full_job", "train_job", "data_job")
"""Job names from the largest to the smallest; ``hrm-trading run`` runs the largest defined."""


def partition_range_tags(symbols: list[str]) -> dict[str, str]:
    """Tags that make one run cover every symbol partition (``raw_ohlcv`` runs them together)."""
    return {
        "dagster/asset_partition_range_start": symbols[0],
        "dagster/asset_partition_range_end": symbols[-1],
    }


def discover_symbols(config: DataConfig, s3_client: Any = None) -> list[str]:
    """The sorted symbols the configured source holds: the partitions a run should cover."""
    return sorted(make_source(config, s3_client).load()["symbol"].unique().tolist())


def sync_dynamic_partitions(instance: dg.DagsterInstance, name: str, keys: list[str]) -> list[str]:
    """Make the dynamic partitions ``name`` exactly ``keys`` (in that order); return them.

    Stale keys are removed so that a partition range never covers one the source lacks; their
    past materialisations stay in the event log.
    """
    current = instance.get_dynamic_partitions(name)
    if current != keys:
        for key in current:
            instance.delete_dynamic_partition(name, key)
        instance.add_dynamic_partitions(name, keys)
    return keys


def sync_symbol_partitions(instance: dg.DagsterInstance, symbols: list[str]) -> list[str]:
    """Make the ``symbols`` partitions exactly ``symbols``; return them."""
    return sync_dynamic_partitions(instance, symbols_partitions.name, symbols)


@dg.schedule(job=data_job, cron_schedule="0 6 * * *", default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_ingest_schedule(
    context: dg.ScheduleEvaluationContext, settings: HRMSettings, s3: S3Resource
) -> dg.RunRequest:
    """Every morning: discover the source's symbols and run the data job over all of them."""
    symbols = discover_symbols(settings.config().data, s3.get_client())
    sync_symbol_partitions(context.instance, symbols)
    return dg.RunRequest(
        run_key=context.scheduled_execution_time.isoformat(), tags=partition_range_tags(symbols)
    )


RETRAIN_CRON = os.environ.get("HRM_RETRAIN_CRON", "0 3 * * 0")
"""When the retrain schedule fires: Sunday nights, or ``$HRM_RETRAIN_CRON`` (a deployment's choice)."""


@dg.job
def maintenance_job() -> None:
    """Compact, expire and clean the Iceberg warehouse (``assets.maintenance``)."""
    warehouse_maintenance()


MAINTENANCE_CRON = os.environ.get("HRM_MAINTENANCE_CRON", "0 4 * * *")
"""When warehouse maintenance runs: every night at 04:00, or ``$HRM_MAINTENANCE_CRON``."""

maintenance_schedule = dg.ScheduleDefinition(
    name="maintenance_schedule",
    job=maintenance_job,
    cron_schedule=MAINTENANCE_CRON,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.schedule(job=train_job, cron_schedule=RETRAIN_CRON, default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_retrain_schedule() -> dg.RunRequest:
    """Sunday nights (``$HRM_RETRAIN_CRON``): retrain from the production model on the latest data."""
    return dg.RunRequest()


@dg.asset_sensor(
    asset_key=feature_drift_report.key,
    job=train_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    required_resource_keys={"settings"},
)
def drift_retrain_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.SensorResult:
    """Launch ``train_job`` when a drift report's drifted share is above the threshold."""
    metadata = asset_event.asset_materialization.metadata
    share = float(metadata[DRIFT_SHARE].value)
    limit = context.resources.settings.config().monitoring.max_drift_share
    if share <= limit:
        return dg.SensorResult(skip_reason=f"drifted share {share:.2f} ≤ {limit:.2f}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{asset_event.run_id}-{asset_event.timestamp}", tags={"trigger": "drift"}
            )
        ]
    )


paper_job = dg.define_asset_job(
    "paper_job", selection=dg.AssetSelection.groups("paper"), description="the paper account's next bars"
)
INTERVAL_CRON = {"1m": "* * * * *", "5m": "*/5 * * * *", "15m": "*/15 * * * *", "1h": "0 * * * *"}
"""One paper tick per bar: the cron of each bar interval (daily bars, and any other: after the
close on weekdays)."""


def paper_cron(interval: str) -> str:
    return INTERVAL_CRON.get(interval, "30 21 * * 1-5")


@dg.schedule(
    job=paper_job,
    cron_schedule=paper_cron(os.environ.get("HRM_PAPER_INTERVAL", "1d")),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def paper_schedule(context: dg.ScheduleEvaluationContext, settings: HRMSettings) -> dg.RunRequest:
    """Once per bar interval (``$HRM_PAPER_INTERVAL``, default daily after the US close): the
    paper account trades the bars that arrived; a replay (the sample) steps one bar."""
    one_bar = {"ops": {"paper_account": {"config": {"ticks": 1}}}}
    replay = default_source(settings) == "replay"
    return dg.RunRequest(
        run_key=context.scheduled_execution_time.isoformat(), run_config=one_bar if replay else {}
    )


@dg.sensor(job=paper_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def paper_new_data_sensor(context: dg.SensorEvaluationContext, settings: HRMSettings) -> dg.SensorResult:
    """A paper run as soon as the configured source has a bar the last run did not see."""
    config = settings.config()
    s3 = S3Resource().get_client() if (config.data.path or "").startswith("s3://") else None
    newest = str(make_source(config.data, s3).load()["ts"].max())
    if newest == context.cursor:
        return dg.SensorResult(skip_reason=f"no bar after {newest}")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"paper-{newest}")], cursor=newest)


@dg.asset_sensor(asset_key=paper_account.key, job=train_job, default_status=dg.DefaultSensorStatus.STOPPED)
def paper_retrain_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.SensorResult:
    """Retrain when the paper account left its backtest's expectation: a drawdown beyond the
    backtest's worst, or live features drifted beyond ``monitoring.max_drift_share``."""
    metadata = asset_event.asset_materialization.metadata
    if not metadata[BEYOND_EXPECTATION].value:
        return dg.SensorResult(skip_reason="the paper account is within its backtest's expectation")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"paper-{asset_event.run_id}", tags={"trigger": "paper_monitoring"})
        ]
    )
