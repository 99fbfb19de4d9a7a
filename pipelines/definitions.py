"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

import os

import dagster as dg

from assets.features import features_finite, features_point_in_time
from assets.monitoring import feature_drift_within_threshold
from assets.paper import paper_within_expectation
from assets.registry import backtest_within_sanity_bounds
from assets.splits import splits_purged_and_embargoed
from pipelines.jobs import (
    DATA_ASSETS,
    EVALUATION_ASSETS,
    MONITORING_ASSETS,
    PAPER_ASSETS,
    daily_ingest_schedule,
    data_job,
    drift_retrain_sensor,
    evaluation_cell_job,
    evaluation_report_job,
    full_job,
    maintenance_job,
    maintenance_schedule,
    paper_job,
    paper_new_data_sensor,
    paper_retrain_sensor,
    paper_schedule,
    train_job,
    training_graph,
    weekly_retrain_schedule,
)
from pipelines.resources import resources_for_profile


def step_executor() -> dg.ExecutorDefinition | None:
    """In the cluster (``HRM_STEP_EXECUTOR=k8s``, set by ``infra/helm/values.yaml``) every step is
    its own Kubernetes Job, so training steps land on GPU nodes through their op tags; elsewhere
    Dagster's default (steps in parallel processes)."""
    if os.environ.get("HRM_STEP_EXECUTOR") != "k8s":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured({"max_concurrent": 8}, name="k8s_step_executor")


def build_definitions(
    resources: dict | None = None, loggers: dict[str, dg.LoggerDefinition] | None = None
) -> dg.Definitions:
    """Definitions with the resources of the current profile, or the ``resources`` given (tests);
    ``loggers`` replace Dagster's console logger (the CLI's progress lines and log file). The
    training assets follow the configured curriculum (one asset per stage)."""
    resources = resources if resources is not None else resources_for_profile()
    training_assets, training_checks = training_graph(resources["settings"].config().training.curriculum)
    return dg.Definitions(
        assets=[*DATA_ASSETS, *training_assets, *MONITORING_ASSETS, *EVALUATION_ASSETS, *PAPER_ASSETS],
        asset_checks=[
            features_finite,
            features_point_in_time,
            splits_purged_and_embargoed,
            *training_checks,
            backtest_within_sanity_bounds,
            feature_drift_within_threshold,
            paper_within_expectation,
        ],
        jobs=[
            data_job,
            train_job,
            full_job,
            evaluation_cell_job,
            evaluation_report_job,
            paper_job,
            maintenance_job,
        ],
        schedules=[daily_ingest_schedule, weekly_retrain_schedule, paper_schedule, maintenance_schedule],
        sensors=[drift_retrain_sensor, paper_new_data_sensor, paper_retrain_sensor],
        resources=resources,
        loggers=loggers,
        executor=step_executor(),
    )


defs = build_definitions()
