"""Deployment profiles: the same definitions load with the cluster's resources, which come from
the environment; a missing variable or an unknown profile is a clear error."""

import itertools
import json
import os

import dagster as dg
import pytest

from assets.resources import HRMSettings
from assets.training import GPU_OP_TAGS
from hrm_core.core.errors import ConfigError
from pipelines.definitions import build_definitions
from pipelines.resources import PRODUCTION_ENV, local_resources, resources_for_profile
from tests.test_mlops import tiny_config

CLUSTER = {
    "HRM_WAREHOUSE_URL": "s3://hrm-data/warehouse",
    "HRM_DVC_REMOTE": "s3://hrm-data/dvc",
    "MLFLOW_TRACKING_URI": "http://mlflow.hrm.svc:5000",
    "HRM_ICEBERG_CATALOG_URI": "postgresql+psycopg2://hrm:s3cret-pw@postgres.hrm.svc:5432/iceberg",
}


def test_the_production_profile_takes_its_locations_from_the_environment(monkeypatch):
    for name, value in CLUSTER.items():
        monkeypatch.setenv(name, value)
    resources = resources_for_profile("production")
    warehouse = resources["warehouse"]  # pyiceberg's SQL catalog; its URI (a password) stays in the env
    assert warehouse.catalog == {"type": "sql", "warehouse": CLUSTER["HRM_WAREHOUSE_URL"]}
    assert warehouse.uri_env == "HRM_ICEBERG_CATALOG_URI"
    assert warehouse.iceberg().properties["uri"] == CLUSTER["HRM_ICEBERG_CATALOG_URI"]
    assert resources["dvc"].remote_url == CLUSTER["HRM_DVC_REMOTE"]
    assert resources["tracking"].tracking_uri == CLUSTER["MLFLOW_TRACKING_URI"]
    assert resources["settings"].config_path == "configs/hrm_gpu.yaml"

    defs = build_definitions(resources)
    dg.Definitions.validate_loadable(defs)
    train = defs.resolve_job_def("train_job")
    stages = ("hrm_stage_1_basic", "hrm_stage_2_advanced", "hrm_stage_3_full")
    for stage in stages:
        tags = train.graph.node_named(stage).definition.tags
        assert json.loads(tags["dagster-k8s/config"]) == GPU_OP_TAGS["dagster-k8s/config"]


@pytest.mark.parametrize("missing", sorted(PRODUCTION_ENV))
def test_a_missing_production_variable_is_named_with_an_example(monkeypatch, missing):
    for name, value in CLUSTER.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError, match=f"needs \\${missing}, e.g. {missing}="):
        resources_for_profile("production")


def test_another_iceberg_catalog_is_configured_by_pyicebergs_own_variables(monkeypatch):
    for name, value in CLUSTER.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HRM_ICEBERG_CATALOG_URI")
    with pytest.raises(ConfigError, match="needs an Iceberg catalog: \\$HRM_ICEBERG_CATALOG_URI"):
        resources_for_profile("production")
    monkeypatch.setenv("PYICEBERG_CATALOG__HRM__TYPE", "rest")
    monkeypatch.setenv("PYICEBERG_CATALOG__HRM__URI", "https://catalog.example.com")
    monkeypatch.setenv("HRM_S3_ENDPOINT_URL", "http://minio:9000")
    warehouse = resources_for_profile("production")["warehouse"]
    assert warehouse.catalog == {"s3.endpoint": "http://minio:9000"}  # the rest is pyiceberg's own
    from pyiceberg.utils.config import Config  # what load_catalog("hrm") reads in a fresh process

    assert Config().get_catalog_config("hrm") == {"type": "rest", "uri": "https://catalog.example.com"}


def test_an_unknown_profile_is_refused(monkeypatch):
    monkeypatch.setenv("HRM_PROFILE", "staging")
    with pytest.raises(ConfigError, match="unknown HRM_PROFILE 'staging'"):
        resources_for_profile()


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_production_service_that_does_not_answer_fails_fast_naming_variable_and_endpoint(
    monkeypatch, tmp_path
):
    import time

    from pipelines.resources import ServiceError, check_production_services

    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://hrm:s3cret-pw@127.0.0.1:{port}")
    monkeypatch.setenv("HRM_WAREHOUSE_URL", "s3://hrm/warehouse")
    monkeypatch.setenv("HRM_DVC_REMOTE", "s3://hrm/dvc")
    started = time.monotonic()
    with pytest.raises(ServiceError) as mlflow_down:
        check_production_services(timeout_s=2)
    message = str(mlflow_down.value)
    assert f"the MLflow server at http://127.0.0.1:{port} ($MLFLOW_TRACKING_URI) does not answer" in message
    assert "s3cret-pw" not in message  # credentials never reach a message
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))  # a local store: nothing to probe
    monkeypatch.setenv("HRM_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(
        ServiceError, match=rf"the S3 endpoint at http://127.0.0.1:{port} \(\$HRM_S3_ENDPOINT_URL\)"
    ):
        check_production_services(timeout_s=2)
    monkeypatch.delenv("HRM_S3_ENDPOINT_URL")
    monkeypatch.setenv("HRM_WAREHOUSE_URL", str(tmp_path / "warehouse"))
    monkeypatch.setenv("HRM_DVC_REMOTE", str(tmp_path / "dvc"))
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(port))
    with pytest.raises(ServiceError, match=rf"Postgres at 127.0.0.1:{port} \(\$DAGSTER_PG_HOST\)"):
        check_production_services(timeout_s=2)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("names", [["only"], ["warm", "grow", "halt", "polish"]])
def test_the_training_assets_follow_the_configured_curriculum(project, names):
    """One stage asset per curriculum stage, in a chain; RL reads the last; the blocking check is
    on the last."""
    curriculum = [{"name": n, "H_cycles": 1, "L_cycles": 2, "episodes": 8} for n in names]
    config = tiny_config(project, training={"curriculum": curriculum})
    settings = HRMSettings(project_dir=str(project), config_path=config)
    defs = build_definitions({**local_resources(project_dir=str(project)), "settings": settings})
    graph = defs.resolve_asset_graph()
    stages = [f"hrm_stage_{i + 1}_{n}" for i, n in enumerate(names)]
    train = defs.resolve_job_def("train_job").asset_layer.selected_asset_keys
    assert {dg.AssetKey(s) for s in stages} <= train
    assert not any(k.path[0].startswith("hrm_stage_") and k.path[0] not in stages for k in train)
    for before, after in itertools.pairwise(stages):
        assert graph.get(dg.AssetKey(after)).parent_keys == {dg.AssetKey(before)}
    assert dg.AssetKey(stages[-1]) in graph.get(dg.AssetKey("rl_finetune")).parent_keys
    checks = {check.asset_key for check in graph.asset_check_keys if check.name == "checkpoint_loads"}
    assert checks == {dg.AssetKey(stages[-1])}


def test_mlflow_is_pointed_back_where_it_was_after_an_active_block(tmp_path, monkeypatch):
    """``tracking.active()`` must not leave MLflow (module state or environment) pointed at its
    store: a client made later from the environment would register into the wrong registry."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from assets.resources import MlflowResource

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    tracking = MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracking.active() as experiment_id:
        assert mlflow.get_registry_uri() == tracking.tracking_uri and experiment_id
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert MlflowClient("http://mlflow.example:5000")._registry_uri == "http://mlflow.example:5000"
