"""Deployment profiles: which resources the same asset code gets.

The asset code never changes between a laptop and the cluster; only these resources do. The
``local`` profile (default) keeps every piece of state under ``HRM_HOME``; ``production`` reads
its locations from the environment (a warehouse on a mounted volume, an S3 DVC remote).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from assets.resources import DvcResource, HRMSettings, MlflowResource, hrm_home


def local_resources(home: Path | None = None, project_dir: str = ".") -> dict:
    """Everything under ``HRM_HOME``: DuckDB file, DVC remote folder, MLflow sqlite store and
    artifacts; S3 only if an endpoint is set."""
    home = home or hrm_home()
    home.mkdir(parents=True, exist_ok=True)
    return {
        "settings": HRMSettings(project_dir=project_dir),
        "warehouse": DuckDBResource(database=str(home / "warehouse.duckdb")),
        "dvc": DvcResource(project_dir=project_dir, remote_url=str(home / "dvc-remote")),
        "s3": S3Resource(endpoint_url=os.environ.get("HRM_S3_ENDPOINT_URL")),
        "tracking": MlflowResource(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_location=(home / "mlartifacts").as_uri(),
        ),
    }


def production_resources() -> dict:
    """Cluster profile: locations come from the environment the Helm chart sets."""
    return {
        "settings": HRMSettings(
            project_dir=os.environ.get("HRM_PROJECT_DIR", "."),
            config_path=os.environ.get("HRM_CONFIG", "configs/hrm_gpu.yaml"),
        ),
        "warehouse": DuckDBResource(database=dg.EnvVar("HRM_WAREHOUSE_PATH").get_value()),
        "dvc": DvcResource(
            project_dir=os.environ.get("HRM_PROJECT_DIR", "."),
            remote_url=dg.EnvVar("HRM_DVC_REMOTE").get_value(),
        ),
        "s3": S3Resource(region_name=os.environ.get("AWS_REGION")),
        "tracking": MlflowResource(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI").get_value()),
    }


def resources_for_profile(profile: str | None = None) -> dict:
    """Resources of ``profile`` (``$HRM_PROFILE``, default ``local``)."""
    profile = profile or os.environ.get("HRM_PROFILE", "local")
    if profile == "production":
        return production_resources()
    return local_resources()
