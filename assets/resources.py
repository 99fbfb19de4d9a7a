"""The resources assets ask for. Their wiring per deployment lives in ``pipelines.resources``."""

import os
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
from dagster_duckdb import DuckDBResource
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._model_registry import utils as registry_state
from mlflow.tracking._tracking_service import utils as tracking_state
from pydantic import PrivateAttr

from hrm_core.core.config import DEFAULT_CONFIG, HRMConfig, load_config
from hrm_core.core.vocabulary import REGISTERED_MODEL
from hrm_core.data.iceberg import Iceberg
from hrm_core.data.versioning import DatasetVersion, version_data


class HRMSettings(dg.ConfigurableResource):
    """Which config preset a run uses, which source it reads, and where the project lives.

    ``source``, ``path`` and ``symbols`` override the preset's ``data`` section, so the CLI's
    ``--source csv --path P`` and the UI's launchpad change the input without editing YAML.
    """

    project_dir: str = "."
    config_path: str | None = DEFAULT_CONFIG
    source: str | None = None
    path: str | None = None
    symbols: list[str] | None = None
    models: list[str] | None = None  # overrides evaluation.models (``hrm-trading evaluate --models``)
    algorithm: str | None = None  # "supervised" (RL off) or an RL algorithm (``hrm-trading train --algo``)
    force: bool = False  # retrain and register even when this data, config and seed were done before
    progress: bool = False  # training progress bars on the terminal (the CLI turns them on)

    def config(self) -> HRMConfig:
        data = {
            k: v for k, v in (("source", self.source), ("path", self.path), ("symbols", self.symbols)) if v
        }
        config_path = self.config_path
        if config_path and not Path(config_path).is_absolute():
            config_path = str(Path(self.project_dir) / config_path)
        evaluation = {"models": self.models} if self.models else {}
        rl = {}
        if self.algorithm:
            supervised = self.algorithm == "supervised"
            rl = {"enabled": not supervised} | ({} if supervised else {"algorithm": self.algorithm})
        return load_config(config_path, data=data, evaluation=evaluation, rl=rl)


class IcebergWarehouse(DuckDBResource):
    """The production warehouse: Iceberg tables in a catalog that step pods write in parallel (see
    ``hrm_core.data.iceberg``). ``catalog`` holds pyiceberg catalog properties without secrets (a
    SQL catalog on Postgres with data files under an ``s3://`` warehouse in the stack; a REST, Glue
    or Hive catalog from ``PYICEBERG_CATALOG__HRM__*``); ``uri_env`` names the variable that holds
    the catalog's URI, which carries a password and so never enters the run's config or the UI.

    It is a ``DuckDBResource``, so assets use it unchanged: each connection is an in-memory DuckDB
    holding the tables as of the snapshot current when it opened, and what the block changed is
    committed, partition by partition, when the block ends without an error (nothing is written
    when it raises). Each commit names the Dagster run, so a failed run can be reverted.
    """

    database: str = ":memory:"
    catalog: dict[str, str]
    uri_env: str | None = None
    _run_id: str = PrivateAttr(default="")

    def iceberg(self) -> Iceberg:
        uri = os.environ.get(self.uri_env) if self.uri_env else None
        return Iceberg(self.catalog | ({"uri": uri} if uri else {}))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_id = context.run_id or ""

    @contextmanager
    def get_connection(
        self, reads: Collection[str] | None = None, writes: Collection[str] = ()
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection holding every table, or only ``reads`` and ``writes`` when the block says
        what it uses (``connect``); ``Iceberg.load_into`` says how each is held."""
        iceberg = self.iceberg()
        con = duckdb.connect()
        try:
            loaded = iceberg.load_into(con, reads, writes)
            yield con
            iceberg.commit(con, loaded, self._run_id)
        finally:
            con.close()


def connect(
    warehouse: DuckDBResource, reads: Collection[str], writes: Collection[str] = ()
) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    """A warehouse connection for a block that reads ``reads`` and changes ``writes`` (and reads
    them): on Iceberg only those tables are loaded and only ``writes`` are hashed and committed,
    which is most of a block's cost there when the warehouse holds more than it uses; a DuckDB
    file holds every table either way."""
    if isinstance(warehouse, IcebergWarehouse):
        return warehouse.get_connection(reads, writes)
    return warehouse.get_connection()


def warehouse_exists(warehouse: DuckDBResource) -> bool:
    """Whether the profile's warehouse holds anything yet (a DuckDB file, or Iceberg tables)."""
    if isinstance(warehouse, IcebergWarehouse):
        return any(snapshot is not None for snapshot in warehouse.iceberg().snapshots().values())
    return Path(warehouse.database).exists()


class DvcResource(dg.ConfigurableResource):
    """The versioned raw snapshots: a DVC repository at ``repo_dir`` (``HRM_HOME`` locally) whose
    ``data/`` is pushed to ``remote_url`` (a folder or an s3:// URI)."""

    repo_dir: str
    remote_url: str
    endpoint_url: str | None = None  # an S3-compatible server for an s3:// remote

    @property
    def data_dir(self) -> Path:
        return Path(self.repo_dir) / "data"

    def version(self) -> DatasetVersion:
        return version_data(Path(self.repo_dir), self.remote_url, self.endpoint_url)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and the model registry. Locally a sqlite store and an artifact folder under
    ``HRM_HOME``; in production a tracking server's URI."""

    tracking_uri: str
    artifact_location: str | None = None
    experiment: str = "hrm-trading"
    model_name: str = REGISTERED_MODEL

    def client(self) -> MlflowClient:
        """A client of this tracking server and registry; MLflow's global state is left alone."""
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self) -> str:
        """The project's experiment, created when missing (never the default experiment, whose
        artifact root is the working directory, ``./mlruns``)."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        return experiment.experiment_id

    @contextmanager
    def active(self) -> Iterator[str]:
        """MLflow's fluent API (``start_run``, ``log_*``, ``register_model``, ``models:/`` URIs)
        pointed at this server, registry and experiment for the block — MLflow 3 logs a model into
        the *active* experiment — and the tracking and registry URIs put back after it. Yields the
        experiment id."""
        # MLflow keeps the URIs in module state and mirrors them into the environment (for its
        # subprocesses); both are put back as they were, unset included, so that a client made
        # later from the environment is not pointed at this block's store.
        environment = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        previous = tracking_state._tracking_uri, registry_state._registry_uri
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            experiment_id = self.experiment_id()
            mlflow.set_experiment(experiment_id=experiment_id)
            yield experiment_id
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])
            for name, value in environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def parent_run_id(self, dagster_run_id: str) -> str:
        """The one MLflow run of a Dagster run, under which its training stages nest."""
        experiment_id = self.experiment_id()
        found = self.client().search_runs(
            [experiment_id], f"tags.`dagster.run_id` = '{dagster_run_id}' AND tags.kind = 'parent'"
        )
        if found:
            return found[0].info.run_id
        run = self.client().create_run(
            experiment_id,
            tags={"dagster.run_id": dagster_run_id, "kind": "parent"},
            run_name=f"dagster-{dagster_run_id[:8]}",
        )
        return run.info.run_id

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI (``make ui`` serves the local store on port 5000)."""
        base = self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"

    def version_with_alias(self, alias: str) -> ModelVersion | None:
        """The registered version that holds ``alias``, or None."""
        try:
            return self.client().get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None
