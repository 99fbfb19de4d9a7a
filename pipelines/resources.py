"""Deployment profiles: which resources the same asset code gets.

The asset code never changes between a laptop and the cluster; only these resources do. The
``local`` profile (default) keeps every piece of state under ``HRM_HOME``; ``production`` reads
its locations from the environment (a warehouse on a mounted volume, an S3 DVC remote).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from assets.resources import DvcResource, HRMSettings, MlflowResource, hrm_home
from hrm_core.errors import ConfigError
from pipelines.storage import RunJsonIOManager


def local_resources(home: Path | None = None, project_dir: str = ".") -> dict:
    """Everything under ``HRM_HOME``: DuckDB file, DVC remote folder, MLflow sqlite store and
    artifacts; S3 only if an endpoint is set."""
    home = home or hrm_home()
    home.mkdir(parents=True, exist_ok=True)
    return {
        "settings": HRMSettings(project_dir=project_dir),
        "warehouse": DuckDBResource(database=str(home / "warehouse.duckdb")),
        "dvc": DvcResource(repo_dir=str(home), remote_url=str(home / "dvc-remote")),
        "s3": S3Resource(endpoint_url=os.environ.get("HRM_S3_ENDPOINT_URL")),
        "tracking": MlflowResource(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_location=(home / "mlartifacts").as_uri(),
        ),
        "io_manager": RunJsonIOManager(base_dir=str(home / "outputs")),
    }


PRODUCTION_ENV = {
    "HRM_WAREHOUSE_PATH": "/data/warehouse.duckdb",
    "HRM_DVC_REMOTE": "s3://bucket/dvc",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
}


def required_env(name: str) -> str:
    """``$name``, or a ConfigError that names it and shows an example value."""
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"the production profile (HRM_PROFILE=production) needs ${name}, "
            f"e.g. {name}={PRODUCTION_ENV[name]}"
        )
    return value


def production_resources() -> dict:
    """Cluster profile: locations come from the environment the deployment sets."""
    project_dir = os.environ.get("HRM_PROJECT_DIR", ".")
    return {
        "settings": HRMSettings(
            project_dir=project_dir, config_path=os.environ.get("HRM_CONFIG", "configs/hrm_gpu.yaml")
        ),
        "warehouse": DuckDBResource(database=required_env("HRM_WAREHOUSE_PATH")),
        "dvc": DvcResource(repo_dir=str(hrm_home()), remote_url=required_env("HRM_DVC_REMOTE")),
        "s3": S3Resource(region_name=os.environ.get("AWS_REGION")),
        "tracking": MlflowResource(tracking_uri=required_env("MLFLOW_TRACKING_URI")),
        "io_manager": RunJsonIOManager(base_dir=str(hrm_home() / "outputs")),
    }


PROFILES = {"local": local_resources, "production": production_resources}


def resources_for_profile(profile: str | None = None) -> dict:
    """Resources of ``profile`` (``$HRM_PROFILE``, default ``local``)."""
    profile = profile or os.environ.get("HRM_PROFILE", "local")
    if profile not in PROFILES:
        raise ConfigError(f"unknown HRM_PROFILE {profile!r}; use one of {sorted(PROFILES)}, e.g. local")
    return PROFILES[profile]()
