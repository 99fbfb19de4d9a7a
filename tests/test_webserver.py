"""A real ``dagster-webserver`` on localhost, queried over GraphQL for the asset graph and a
CLI run's materialisations."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from pipelines.cli import main

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def test_the_webserver_serves_the_asset_graph_and_a_runs_materialisations(project: Path):
    assert main(["run", "--job", "data"]) == 0
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
    workspace = project / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: pipelines.definitions\n")
    port = free_port()
    server = subprocess.Popen(
        [
            Path(sys.executable).parent / "dagster-webserver",
            "-w",
            str(workspace),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the webserver did not start"
                time.sleep(1)
        nodes = graphql(port, "{ assetNodes { assetKey { path } dependencyKeys { path } } }")["assetNodes"]
        graph = {n["assetKey"]["path"][0]: {d["path"][0] for d in n["dependencyKeys"]} for n in nodes}
        assert graph["hrm_stage_2_advanced"] == {"hrm_stage_1_basic"}
        assert graph["promotion_decision"] == {"candidate_model", "backtest_report"}
        assert {"raw_ohlcv", "walk_forward_splits", "feature_drift_report", "paper_account"} <= set(graph)
        (repository,) = graphql(
            port,
            "{ repositoriesOrError { ... on RepositoryConnection { nodes { "
            "jobs { name } schedules { name } sensors { name } } } } }",
        )["repositoriesOrError"]["nodes"]
        assert "paper_job" in {job["name"] for job in repository["jobs"]}
        assert "paper_schedule" in {schedule["name"] for schedule in repository["schedules"]}
        sensors = {sensor["name"] for sensor in repository["sensors"]}
        assert {"paper_new_data_sensor", "paper_retrain_sensor"} <= sensors
        asset = graphql(
            port,
            '{ assetOrError(assetKey: {path: ["walk_forward_splits"]}) '
            "{ ... on Asset { assetMaterializations(limit: 1) { runId } } } }",
        )["assetOrError"]
        assert asset["assetMaterializations"] == [{"runId": run.run_id}]
    finally:
        server.terminate()
        server.wait(timeout=30)
