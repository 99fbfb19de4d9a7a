"""The MLOps loop through Dagster with real DuckDB, MLflow (sqlite) and DVC in a temporary
HRM_HOME: the full graph twice (registry versions and aliases), the promotion policy, drift and
its sensor, and ``predict`` on the registered model."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.resources import HRMSettings
from pipelines.cli import main
from pipelines.definitions import build_definitions
from pipelines.jobs import partition_range_tags, sync_symbol_partitions
from pipelines.resources import local_resources

pytestmark = pytest.mark.slow

TINY = {
    "hierarchical_features": {"high_level_lookback": 20, "low_level_lookback": 10},
    "model": {"hidden_size": 16, "num_heads": 2, "h_pool": 5, "halt_max_steps": 2},
    "training": {
        "deep_supervision_segments": 2,
        "chunk_bars": 32,
        "batch_chunks": 4,
        "eval_every": 2,
        "curriculum": [
            {"name": "basic", "H_cycles": 1, "L_cycles": 2, "episodes": 8},
            {"name": "advanced", "H_cycles": 1, "L_cycles": 2, "episodes": 8},
            {"name": "full", "H_cycles": 1, "L_cycles": 2, "act": True, "episodes": 8},
        ],
    },
    "monitoring": {"drift_window_bars": 250, "max_drift_share": 0.5},
}


def tiny_config(project: Path, **sections) -> str:
    preset = yaml.safe_load((project / "configs" / "hrm_cpu_small.yaml").read_text())
    for name, values in {**TINY, **sections}.items():
        preset[name] = {**preset.get(name, {}), **values}
    path = project / "configs" / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return "configs/tiny.yaml"


def run_full_job(project: Path, instance: dg.DagsterInstance, config_path: str) -> dg.ExecuteInProcessResult:
    resources = {
        **local_resources(project_dir=str(project)),
        "settings": HRMSettings(project_dir=str(project), config_path=config_path),
    }
    defs = build_definitions(resources)
    symbols = sync_symbol_partitions(instance, ["NASDAQ", "SP500"])
    return defs.resolve_job_def("full_job").execute_in_process(
        instance=instance, tags=partition_range_tags(symbols)
    )


def outputs(result: dg.ExecuteInProcessResult) -> dict:
    return {
        name: result.output_for_node(name)
        for name in ("hrm_stage_3_full", "candidate_model", "backtest_report", "promotion_decision")
    }


def test_the_full_graph_registers_versions_and_moves_aliases(project: Path, capsys):
    config_path = tiny_config(project)
    tracking = local_resources()["tracking"]
    with dg.instance_for_test() as instance:
        first = run_full_job(project, instance, config_path)
        assert first.success
        out = outputs(first)
        client = tracking.client()
        staging = client.get_model_version_by_alias("hrm-trader", "staging")
        assert str(staging.version) == out["candidate_model"]["version"] == "1"
        decision = out["promotion_decision"]
        assert decision["compared_with"] == "buy_and_hold"
        production = tracking.version_with_alias("production")
        assert (production is not None) == (decision["decision"] == "promoted")
        tags = client.get_model_version("hrm-trader", "1").tags
        assert tags["promotion.decision"] == decision["decision"] and "Sharpe" in tags["promotion.reasons"]

        stage_runs = client.search_runs([tracking.experiment_id()], "tags.kind = 'stage'")
        assert sorted(r.data.tags["stage"] for r in stage_runs) == ["advanced", "basic", "full"]
        parent = out["candidate_model"]["run_id"]
        assert {r.data.tags["mlflow.parentRunId"] for r in stage_runs} == {parent}
        (version_event,) = [
            e
            for e in first.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "dataset_version"
        ]
        md5 = version_event.step_materialization_data.materialization.metadata["data_version"].value
        assert {r.data.tags["data_version"] for r in stage_runs} == {md5}
        assert (
            "test_sharpe" in client.get_run(parent).data.metrics
            or "test_total_return" in client.get_run(parent).data.metrics
        )

        report = json.loads((Path(out["backtest_report"]["report_dir"]) / "summary.json").read_text())
        assert {"hrm", "flat", "gru", "buy_and_hold"} <= set(report["portfolio"])
        drift = [
            e
            for e in first.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "feature_drift_report"
        ]
        assert len(drift) == 1

        second = run_full_job(project, instance, config_path)
        assert second.success
        assert str(client.get_model_version_by_alias("hrm-trader", "staging").version) == "2"
        out2 = outputs(second)
        if production is not None:
            assert out2["promotion_decision"]["compared_with"] == "production"
            assert out2["backtest_report"]["production_version"] == str(production.version)
        now = tracking.version_with_alias("production")
        if out2["promotion_decision"]["decision"] == "rejected":
            assert (now and now.version) == (production and production.version)

        assert main(["predict", "--model-alias", "staging", "--json", "--config", config_path]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert {row["symbol"] for row in printed} == {"NASDAQ", "SP500"}
        assert {"action", "quantity", "stop_loss", "take_profit", "confidence", "segments"} <= set(printed[0])
