"""Deployment profiles: which resources the same asset code gets.

The asset code never changes between a laptop and the cluster; only these resources do. The
``local`` profile (default) keeps every piece of state under ``HRM_HOME``; ``production`` reads
its locations from the environment (a warehouse on a mounted volume, an S3 DVC remote).
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dagster_aws.s3 import S3Resource
from dagster_duckdb import DuckDBResource

from assets.locations import ARTIFACTS_DIR, REGISTRY_FILE, WAREHOUSE_FILE
from assets.resources import DvcResource, HRMSettings, IcebergWarehouse, MlflowResource
from hrm_core.core.config import hrm_home
from hrm_core.core.errors import ConfigError
from pipelines.storage import RunJsonIOManager


def local_resources(home: Path | None = None, project_dir: str = ".") -> dict:
    """Everything under ``HRM_HOME``: DuckDB file, DVC remote folder, MLflow sqlite store and
    artifacts; S3 only if an endpoint is set."""
    home = home or hrm_home()
    home.mkdir(parents=True, exist_ok=True)
    return {
        "settings": HRMSettings(project_dir=project_dir),
        "warehouse": DuckDBResource(database=str(home / WAREHOUSE_FILE)),
        "dvc": DvcResource(repo_dir=str(home), remote_url=str(home / "dvc-remote")),
        "s3": S3Resource(endpoint_url=os.environ.get("HRM_S3_ENDPOINT_URL")),
        "tracking": MlflowResource(
            tracking_uri=f"sqlite:///{home / REGISTRY_FILE}",
            artifact_location=(home / ARTIFACTS_DIR).as_uri(),
        ),
        "io_manager": RunJsonIOManager(base_dir=str(home / "outputs")),
    }


PRODUCTION_ENV = {
    "HRM_WAREHOUSE_URL": "s3://hrm/warehouse",
    "HRM_DVC_REMOTE": "s3://hrm/dvc",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
}
"""The variables the production profile cannot do without, with an example each. Optional:
``HRM_S3_ENDPOINT_URL`` (an S3-compatible server), ``AWS_REGION``, ``HRM_CONFIG``,
``HRM_PROJECT_DIR``; the instance's ``DAGSTER_PG_*`` are read by ``infra/dagster.yaml``."""


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
    """Cluster profile: locations come from the environment the deployment sets. The warehouse is
    Iceberg, so step pods write it in parallel; ``HRM_HOME`` is each pod's scratch space (the DVC
    working copy, asset values) on a volume the pods share."""
    project_dir = os.environ.get("HRM_PROJECT_DIR", ".")
    endpoint = os.environ.get("HRM_S3_ENDPOINT_URL") or None
    home = hrm_home()
    return {
        "settings": HRMSettings(
            project_dir=project_dir, config_path=os.environ.get("HRM_CONFIG", "configs/hrm_gpu.yaml")
        ),
        "warehouse": iceberg_warehouse(endpoint),
        "dvc": DvcResource(
            repo_dir=str(home), remote_url=required_env("HRM_DVC_REMOTE"), endpoint_url=endpoint
        ),
        "s3": S3Resource(region_name=os.environ.get("AWS_REGION"), endpoint_url=endpoint),
        "tracking": MlflowResource(tracking_uri=required_env("MLFLOW_TRACKING_URI")),
        "io_manager": RunJsonIOManager(base_dir=str(home / "outputs")),
    }


CATALOG_URI_ENV = "HRM_ICEBERG_CATALOG_URI"
CATALOG_ENV_PREFIX = "PYICEBERG_CATALOG__HRM__"


def iceberg_warehouse(endpoint: str | None) -> IcebergWarehouse:
    """The Iceberg catalog of the production profile: pyiceberg's SQL catalog on
    ``$HRM_ICEBERG_CATALOG_URI`` (the stack's Postgres) with data files under ``$HRM_WAREHOUSE_URL``;
    without it, the catalog pyiceberg configures from ``PYICEBERG_CATALOG__HRM__*`` (REST, Glue,
    Hive, ...)."""
    region = os.environ.get("AWS_REGION")
    files = {"s3.endpoint": endpoint, "s3.region": region}
    files = {k: v for k, v in files.items() if v}
    if os.environ.get(CATALOG_URI_ENV):
        catalog = {"type": "sql", "warehouse": required_env("HRM_WAREHOUSE_URL"), **files}
        return IcebergWarehouse(catalog=catalog, uri_env=CATALOG_URI_ENV)
    if not any(name.startswith(CATALOG_ENV_PREFIX) for name in os.environ):
        raise ConfigError(
            f"the production profile (HRM_PROFILE=production) needs an Iceberg catalog: ${CATALOG_URI_ENV} "
            f"for a SQL catalog, e.g. "
            f"{CATALOG_URI_ENV}=postgresql+psycopg2://hrm:PASSWORD@postgres:5432/iceberg, "
            f"or pyiceberg's own variables for another, e.g. {CATALOG_ENV_PREFIX}TYPE=rest and "
            f"{CATALOG_ENV_PREFIX}URI=https://catalog.example.com"
        )
    return IcebergWarehouse(catalog=files)


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` left out, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def check_production_services(timeout_s: float = 5.0) -> None:
    """Fail fast, naming the variable and the endpoint, when a service of the production profile
    does not answer: the MLflow server, the S3 endpoint (and the buckets of the warehouse and the
    DVC remote) and the instance's Postgres. Without this a run would retry for minutes and end in
    a driver's traceback."""
    tracking = required_env("MLFLOW_TRACKING_URI")
    if tracking.startswith("http"):
        try:
            with urllib.request.urlopen(f"{tracking.rstrip('/')}/health", timeout=timeout_s):
                pass
        except OSError as error:
            raise ServiceError(
                "MLFLOW_TRACKING_URI", without_credentials(tracking), "the MLflow server", error
            ) from None
    endpoint = os.environ.get("HRM_S3_ENDPOINT_URL") or None
    for name in ("HRM_WAREHOUSE_URL", "HRM_DVC_REMOTE"):
        url = required_env(name)
        if url.startswith("s3://"):
            _check_bucket(name, url.removeprefix("s3://").split("/")[0], endpoint, timeout_s)
    if os.environ.get("DAGSTER_PG_HOST"):
        host, port = os.environ["DAGSTER_PG_HOST"], int(os.environ.get("DAGSTER_PG_PORT", "5432"))
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as error:
            raise ServiceError(
                "DAGSTER_PG_HOST", f"{host}:{port}", "the Dagster instance's Postgres", error
            ) from None


def _check_bucket(variable: str, bucket: str, endpoint: str | None, timeout_s: float) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    where = endpoint or "AWS S3"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        raise ServiceError(variable, f"s3://{bucket} at {where}", "the bucket", error) from None
    except BotoCoreError as error:
        name = "HRM_S3_ENDPOINT_URL" if endpoint else variable
        raise ServiceError(name, where, "the S3 endpoint", error) from None


class ServiceError(ConfigError):
    """A service of the production profile does not answer."""

    def __init__(self, variable: str, endpoint: str, what: str, error: Exception) -> None:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        super().__init__(
            f"{what} at {endpoint} (${variable}) does not answer: {reason}. Start it (locally: "
            f'`hrm-trading stack up`, then `eval "$(hrm-trading stack env)"`) or fix ${variable}'
        )


PROFILES = {"local": local_resources, "production": production_resources}


def resources_for_profile(profile: str | None = None) -> dict:
    """Resources of ``profile`` (``$HRM_PROFILE``, default ``local``)."""
    profile = profile or os.environ.get("HRM_PROFILE", "local")
    if profile not in PROFILES:
        raise ConfigError(f"unknown HRM_PROFILE {profile!r}; use one of {sorted(PROFILES)}, e.g. local")
    return PROFILES[profile]()
