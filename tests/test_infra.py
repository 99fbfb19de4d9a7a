"""The deployment files in infra/: every Kubernetes manifest, and every Job that dagster-k8s builds
from the training steps' op tags, validates against the Kubernetes schema (strict); the Helm
values use only keys the Dagster chart documents; the image pins every dependency."""

import re
import tomllib
from pathlib import Path

import dagster as dg
import kubernetes_validate
import pytest
import yaml
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
from kubernetes.client import ApiClient

from assets.training import GPU_OP_TAGS
from pipelines.definitions import build_definitions, step_executor

INFRA = Path(__file__).resolve().parent.parent / "infra"
K8S_VERSION = "1.31"
MANIFESTS = sorted((INFRA / "k8s").glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def pod_templates(manifest: dict) -> list[dict]:
    """A PyTorchJob is a custom resource the Kubernetes schema does not know: its pod templates are
    validated as PodTemplates."""
    specs = manifest["spec"]["pytorchReplicaSpecs"].values()
    return [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": s["template"]}
        for s in specs
    ]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schema(path):
    for manifest in documents(path):
        if manifest["kind"] == "PyTorchJob":
            assert manifest["apiVersion"] == "kubeflow.org/v1"
            for template in pod_templates(manifest):
                validate(template)
        else:
            validate(manifest)


def test_a_manifest_with_an_unknown_field_is_caught():
    broken = documents(INFRA / "k8s" / "mlflow.yaml")[0]
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_the_jobs_dagster_k8s_builds_for_training_steps_validate_and_ask_for_a_gpu_node():
    defs = build_definitions()
    train = defs.resolve_job_def("train_job")
    stages = sorted(
        node.name
        for node in train.graph.nodes
        if node.name.startswith("hrm_stage_") and "check" not in node.name
    )
    assert stages == ["hrm_stage_1_basic", "hrm_stage_2_advanced", "hrm_stage_3_full"]  # the preset's
    for stage in stages:
        tags = train.graph.node_named(stage).definition.tags
        user_config = UserDefinedDagsterK8sConfig.from_dict(yaml.safe_load(tags["dagster-k8s/config"]))
        image = "ghcr.io/hrm-trading/hrm-trading:0.1.0"
        job = construct_dagster_k8s_job(
            DagsterK8sJobConfig(
                job_image=image, dagster_home="/opt/dagster", env_secrets=["hrm-trading-env"]
            ),
            ["dagster", "api", "execute_step"],
            f"dagster-step-{stage.replace('_', '-')}",
            user_defined_k8s_config=user_config,
        )
        manifest = ApiClient().sanitize_for_serialization(job)
        validate(manifest)
        pod = manifest["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"] == GPU_OP_TAGS["dagster-k8s/config"]["pod_spec_config"]["node_selector"]


def test_in_the_cluster_every_step_is_its_own_kubernetes_job(monkeypatch):
    assert step_executor() is None  # locally: Dagster's multiprocess default
    monkeypatch.setenv("HRM_STEP_EXECUTOR", "k8s")
    assert step_executor().name == "k8s_step_executor"
    defs = build_definitions()
    assert isinstance(defs, dg.Definitions) and defs.executor.name == "k8s_step_executor"


def value_paths(value, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in value_paths(v, f"{prefix}.{k}" if prefix else k)] or [
            prefix
        ]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [p for item in value for p in value_paths(item, f"{prefix}[]")]
    return [prefix]


def documented(path: str, keys: list[str]) -> bool:
    """``path`` is a documented key, or lies below one that takes any Kubernetes object."""
    below = [k.removesuffix(".*") for k in keys if k.endswith(".*")]
    return path in keys or any(path == b or path.startswith((f"{b}.", f"{b}[]")) for b in below)


def test_the_helm_values_use_only_keys_the_dagster_chart_documents():
    keys = [line.strip() for line in (INFRA / "helm" / "chart-keys.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    values = yaml.safe_load((INFRA / "helm" / "values.yaml").read_text())
    undocumented = [p for p in value_paths(values) if not documented(p, keys)]
    assert undocumented == []
    assert not documented("runLauncher.config.k8sRunLauncher.envSecret", keys)  # a typo is caught
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["env"]["HRM_PROFILE"] == "production"
    assert deployment["env"]["HRM_STEP_EXECUTOR"] == "k8s"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_the_image_pins_every_dependency_and_runs_as_a_user():
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", dockerfile, re.M)
    assert "--constraint infra/constraints.txt" in dockerfile
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (INFRA / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    meta = tomllib.loads((INFRA.parent / "pyproject.toml").read_text())["project"]
    wanted = (
        meta["dependencies"] + meta["optional-dependencies"]["aws"] + meta["optional-dependencies"]["k8s"]
    )
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted} - {"torch"}
    assert names - pins == set()
