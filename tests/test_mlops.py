"""The MLOps loop through Dagster with real DuckDB, MLflow (sqlite) and DVC in a temporary
HRM_HOME: the full graph twice (registry versions and aliases), the promotion policy, drift and
its sensor, and ``predict`` on the registered model."""

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from assets.locations import REGISTRY_FILE, SERVED_DIR
from assets.monitoring import DRIFT_SHARE, drifted_share
from assets.resources import HRMSettings
from assets.served_cache import ServedCache
from hrm_core.core.config import PromotionConfig, merged, read_preset
from hrm_core.sim.promotion import decide_promotion
from pipelines.cli import main
from pipelines.definitions import build_definitions
from pipelines.jobs import drift_retrain_sensor, partition_range_tags, sync_symbol_partitions
from pipelines.resources import local_resources

pytestmark = pytest.mark.slow


def tiny_config(project: Path, **sections) -> str:
    """The smoke preset with ``sections`` laid over it, as a file of the project."""
    preset = merged(read_preset(project / "configs" / "hrm_smoke.yaml"), sections)
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
        assert decision["compared_with"] == "benchmark"  # no production model yet: the benchmark policy
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
        lineage = client.get_model_version("hrm-trader", "1").tags
        assert lineage["data_version"] == md5 and lineage["fold"] == "0"
        assert {"feature_hash", "config_hash", "git_commit", "lineage_key", "fold.train", "fold.test"} <= set(
            lineage
        )
        assert "test_total_return" in client.get_run(parent).data.metrics

        report = json.loads((Path(out["backtest_report"]["report_dir"]) / "summary.json").read_text())
        assert {"hrm", "flat", "gru", "buy_and_hold"} <= set(report["portfolio"])
        drift = [
            e
            for e in first.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "feature_drift_report"
        ]
        assert len(drift) == 1

    if production is None:  # promote by hand, as a user can in the MLflow UI, so retraining starts from it
        client.set_registered_model_alias("hrm-trader", "production", "1")
    production = tracking.version_with_alias("production")
    capsys.readouterr()
    # another config on the same data: retraining starts from production (the same data and config
    # would only reproduce it, and are not retrained: see test_reliability)
    # and with RL after the curriculum: the H-MTR (workers, then master) goes through the same path
    rl = {"enabled": True, "algorithm": "hmtr", "updates": 2, "worker_updates": 1, "n_envs": 4}
    config_path = tiny_config(
        project,
        training={"learning_rate": 5e-4},
        rl={**rl, "rollout_bars": 8, "group_size": 2},
    )
    assert main(["run", "--config", config_path]) == 0  # the second run as a user makes it: the CLI
    printed = capsys.readouterr().out
    assert "registered hrm-trader version 2 (alias staging)" in printed
    served = ServedCache(
        project.parent / "hrm_home" / SERVED_DIR / "hrm-trader", project.parent / "hrm_home" / REGISTRY_FILE
    )
    assert served.version_for("staging") == "2"  # the run warmed the cache: predict needs no registry
    # fold 0's model is backtested on every later test fold: 2011 to the last decision bar of 2018
    assert re.search(r"out of sample 2011-01-03 → 2018-12-\d\d, net of costs", printed)
    assert "| buy_and_hold" in printed
    assert "feature drift check " in printed and "hrm_stage_3_full: " in printed
    assert re.search(r"hrm_stage_3_full: .* best validation active Sharpe [+-]\d\.\d\d", printed)
    tilt = r"policy: benchmark \+ tilt, tilt (deployed|off: trades the benchmark) — \S"
    assert re.search(tilt, printed)
    assert "rl_finetune: 6 steps" in printed  # 4 worker phases of 1 update (every task is tagged), master 2
    assert "promotion: " in printed and "against production; production is version 1: " in printed
    facts = json.loads((project.parent / "hrm_home" / "reports" / "latest" / "summary.json").read_text())
    assert facts["registered_model"]["version"] == "2" and set(facts["stages"]) == {
        "hrm_stage_1_basic",
        "hrm_stage_2_advanced",
        "hrm_stage_3_full",
        "rl_finetune",
    }
    rl_run = client.search_runs([tracking.experiment_id()], "tags.stage = 'rl_hmtr'")[0]
    assert {"master.reward", "master.kl", "master.clip_fraction", "master.explained_variance"} <= set(
        rl_run.data.metrics
    )
    assert facts["stages"]["rl_finetune"]["stage"] == "rl_hmtr"  # version 2 is the H-MTR, served by predict
    assert str(client.get_model_version_by_alias("hrm-trader", "staging").version) == "2"
    second = facts["promotion"]
    assert second["compared_with"] == "production"
    now = tracking.version_with_alias("production")
    assert str(now.version) == ("1" if second["decision"] == "rejected" else "2")
    retrained = client.search_runs(
        [tracking.experiment_id()], "tags.stage = 'basic'", order_by=["attributes.start_time DESC"]
    )[0]
    assert retrained.data.tags["warm_start"] == "production v1"
    assert retrained.data.tags["ewc_anchor"] == "production v1"
    assert "ewc" in retrained.data.metrics

    assert main(["predict", "--model-alias", "staging", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert {row["symbol"] for row in predicted} == {"NASDAQ", "SP500"}
    columns = {"action", "target_exposure", "position", "confidence", "p_up", "market_risk", "segments"}
    assert columns <= set(predicted[0]) and "stop_loss" not in predicted[0]  # only trained outputs
    assert all(row["model"] == "hrm-trader@staging" for row in predicted)
    assert main(["predict", "--model-alias", "staging", "--symbol", "SP500", "--json"]) == 0
    (alone,) = json.loads(capsys.readouterr().out)  # a batch of one: the program's batch size is free
    batched = next(row for row in predicted if row["symbol"] == "SP500")
    assert alone.keys() == batched.keys()
    for key, value in batched.items():  # equal up to float rounding of a different batch size
        assert alone[key] == (pytest.approx(value, rel=1e-5, abs=1e-6) if isinstance(value, float) else value)
    assert main(["predict", "--model-alias", "canary"]) == 2
    assert "no model version has the alias 'canary'" in capsys.readouterr().err
    assert not (project / "mlruns").exists()  # MLflow writes under HRM_HOME, never the working directory


POLICY = PromotionConfig(min_psr=0.5, max_drawdown_margin=0.05)
GOOD = {"sharpe": 1.2, "max_drawdown": -0.10, "psr": 0.9}


@pytest.mark.parametrize(
    "candidate, incumbent, failed, promote, failing",
    [
        (
            GOOD,
            {"sharpe": 0.5, "max_drawdown": -0.20, "psr": 0.7},
            [],
            True,
            None,
        ),  # first model vs buy-and-hold
        (
            GOOD,
            {"sharpe": 1.5, "max_drawdown": -0.08, "psr": 0.95},
            [],
            False,
            "Sharpe",
        ),  # worse than production
        (
            GOOD,
            {"sharpe": 0.8, "max_drawdown": -0.02, "psr": 0.8},
            [],
            False,
            "max drawdown",
        ),  # deeper drawdown
        ({**GOOD, "psr": 0.3}, {"sharpe": 0.1, "max_drawdown": -0.3, "psr": 0.2}, [], False, "PSR"),
        (
            GOOD,
            {"sharpe": 0.5, "max_drawdown": -0.20, "psr": 0.7},
            ["backtest_within_sanity_bounds"],
            False,
            "checks",
        ),
        (
            {**GOOD, "sharpe": float("nan")},
            {"sharpe": 0.1, "max_drawdown": -0.2, "psr": 0.5},
            [],
            False,
            "Sharpe",
        ),
    ],
)
def test_the_promotion_policy(candidate, incumbent, failed, promote, failing):
    decision = decide_promotion(candidate, incumbent, "production", POLICY, failed)
    assert decision.promote is promote
    assert len(decision.reasons) == 4
    failures = [r for r in decision.reasons if r.startswith("FAIL")]
    assert (failing is None and not failures) or (len(failures) == 1 and failing in failures[0])


def test_drift_is_found_in_a_shifted_window_and_not_in_an_unshifted_one():
    rng = np.random.default_rng(0)
    columns = [f"f{i}" for i in range(6)]
    reference = pd.DataFrame(rng.standard_normal((2000, 6)), columns=columns)
    same = pd.DataFrame(rng.standard_normal((1000, 6)), columns=columns)
    shifted = same + np.array([0.5, 0.5, 0.5, 0.5, 0.0, 0.0])
    share, drifted, _ = drifted_share(reference, same)
    assert share == 0.0 and drifted == []
    share, drifted, _ = drifted_share(reference, shifted)
    assert share == pytest.approx(4 / 6) and drifted == ["f0", "f1", "f2", "f3"]


def drift_event(instance: dg.DagsterInstance, share: float) -> dg.EventLogEntry:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="feature_drift_report", metadata={DRIFT_SHARE: share})
    )
    return instance.get_latest_materialization_event(dg.AssetKey("feature_drift_report"))


@pytest.mark.parametrize("share, launches", [(0.8, True), (0.2, False)])
def test_the_drift_sensor_requests_a_retrain_only_above_the_threshold(project: Path, share, launches):
    settings = HRMSettings(project_dir=str(project), config_path=tiny_config(project))
    defs = build_definitions({**local_resources(project_dir=str(project)), "settings": settings})
    with dg.instance_for_test() as instance:
        drift_event(instance, share)
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources={"settings": settings}
        )
        result = drift_retrain_sensor.evaluate_tick(context)
    requests = result.run_requests or []
    assert len(requests) == int(launches)
    if launches:
        assert requests[0].tags["trigger"] == "drift"


@pytest.mark.parametrize(
    ("across", "promote", "failing"),
    [
        ({"mean": 0.3, "ci_low": 0.1, "ci_high": 0.5, "folds": 4, "pairs": 12}, True, None),
        (
            {"mean": 0.3, "ci_low": -0.1, "ci_high": 0.7, "folds": 4, "pairs": 12},
            False,
            "across the evaluation",
        ),
        (None, False, "no evaluation of this configuration"),
    ],
)
def test_promotion_across_all_folds_needs_the_evaluation_to_beat_the_benchmark(across, promote, failing):
    policy = POLICY.model_copy(update={"evaluation": "all_folds"})
    incumbent = {"sharpe": 0.5, "max_drawdown": -0.20, "psr": 0.7}
    decision = decide_promotion(GOOD, incumbent, "benchmark", policy, [], across_folds=across)
    assert decision.promote is promote and len(decision.reasons) == 5
    failures = [r for r in decision.reasons if r.startswith("FAIL")]
    assert (failing is None and not failures) or (len(failures) == 1 and failing in failures[0])
    one_fold = decide_promotion(GOOD, incumbent, "benchmark", POLICY, [], across_folds=across)
    assert one_fold.promote and len(one_fold.reasons) == 4  # the default judges the run's own fold


def test_a_production_model_is_not_compared_on_bars_it_trained_on():
    import duckdb

    from assets.registry import comparison_problem
    from hrm_core.core.config import load_config
    from hrm_core.model.build import build_model_for
    from hrm_core.workflows.train import prepare_warehouse

    config = load_config("configs/hrm_cpu_small.yaml")
    con = duckdb.connect()
    prepare_warehouse(config, con)
    model = build_model_for(config, ("a",), ("b",))
    assert comparison_problem(con, model, model, own_fold=0, fold=1) is None
    assert "past the test start" in comparison_problem(con, model, model, own_fold=3, fold=0)
    other = build_model_for(config, ("a",), ("c",))
    assert "other features" in comparison_problem(con, other, model, own_fold=0, fold=1)
