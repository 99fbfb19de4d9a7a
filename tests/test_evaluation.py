"""Honest evaluation: cells paired by fold and seed, intervals clustered by fold, the SPA test against
the benchmark, the DSR over every trial,
and ``hrm-trading evaluate`` running fold × seed partitions through the Dagster code location."""

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from scipy import stats

from hrm_core.workflows.evaluation import summarise, with_dsr
from pipelines.cli import main


def row(model, fold, seed, sharpe, returns):
    return {
        "model": model,
        "fold": fold,
        "seed": seed,
        "sharpe": sharpe,
        "total_return": 0.0,
        "max_drawdown": -0.1,
        "exposure": 0.5,
        "turnover": 0.01,
        "costs": 0.001,
        "psr": 0.5,
        "active_return": 0.0,
        "active_sharpe": sharpe - 1.0,
        "period": "",
        "returns": returns,
    }


def test_differences_are_paired_by_fold_and_seed_and_rules_by_fold():
    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.01, 50).tolist()  # noqa: E731
    rows = []
    for fold in range(3):
        for seed in (1, 2):
            rows.append(row("hrm", fold, seed, 1.0 + fold + 0.1 * seed, noise()))
            rows.append(row("flat", fold, seed, 0.5 + fold, noise()))
        rows.append(row("buy_and_hold", fold, None, 2.0, noise()))
    frame = with_dsr(rows)
    assert list(dict.fromkeys(frame["model"])) == ["hrm", "flat", "buy_and_hold"]
    assert frame["dsr"].between(0, 1).all()
    summary = summarise(frame)
    flat = summary["paired_sharpe_difference"]["hrm - flat"]
    assert flat["pairs"] == 6 and flat["folds"] == 3 and flat["mean"] == pytest.approx(0.5 + 0.15)
    assert flat["ci_low"] == pytest.approx(flat["mean"]) == pytest.approx(flat["ci_high"])  # every fold: 0.65
    bh = summary["paired_sharpe_difference"]["hrm - buy_and_hold"]
    assert bh["pairs"] == 6 and bh["mean"] == pytest.approx(
        np.mean([1.0 + f + 0.1 * s - 2 for f in range(3) for s in (1, 2)])
    )
    assert summary["models"]["hrm"]["cells"] == 6 and summary["models"]["buy_and_hold"]["cells"] == 3


def test_the_interval_is_students_t_over_the_fold_means_not_over_the_cells():
    """Seeds share their fold's test block: 3 folds × 5 seeds are 3 observations, not 15."""
    rows = []
    for fold, gain in enumerate((-0.5, 0.1, 0.9)):
        for seed in range(5):
            rows.append(row("hrm", fold, seed, 1.0 + gain + 0.01 * seed, [0.0] * 10))
            rows.append(row("flat", fold, seed, 1.0, [0.0] * 10))
    pair = summarise(with_dsr(rows))["paired_sharpe_difference"]["hrm - flat"]
    fold_means = np.array([-0.5, 0.1, 0.9]) + 0.02
    half = stats.t.ppf(0.975, 2) * fold_means.std(ddof=1) / np.sqrt(3)
    assert pair["mean"] == pytest.approx(fold_means.mean())
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx(
        (fold_means.mean() - half, fold_means.mean() + half)
    )
    naive = 1.96 * np.repeat(fold_means, 5).std(ddof=1) / np.sqrt(15)
    assert pair["ci_high"] - pair["ci_low"] > 4 * naive  # what treating cells as independent would claim
    assert np.isnan(summarise(with_dsr([r for r in rows if r["fold"] == 0]))["paired_sharpe_difference"][
        "hrm - flat"]["ci_low"])  # fmt: skip


def test_the_spa_test_finds_a_model_that_beats_the_benchmark_and_not_one_that_does_not():
    rng = np.random.default_rng(1)
    bench = [rng.normal(0.0003, 0.01, 250) for _ in range(2)]
    rows = []
    for fold in range(2):
        rows.append(row("benchmark", fold, None, 0.5, bench[fold].tolist()))
        for seed in range(2):
            rows.append(
                row("hrm", fold, seed, 1.0, (bench[fold] + 0.002 + rng.normal(0, 0.002, 250)).tolist())
            )
            rows.append(row("flat", fold, seed, 0.5, (bench[fold] + rng.normal(0, 0.002, 250)).tolist()))
    skilled = summarise(with_dsr(rows))["spa_vs_benchmark"]
    assert skilled["models"] == ["hrm", "flat"] and skilled["bars"] == 500 and skilled["consistent"] < 0.05
    unskilled = summarise(with_dsr([r for r in rows if r["model"] != "hrm"]))["spa_vs_benchmark"]
    assert unskilled["consistent"] > 0.1


@pytest.mark.slow
def test_evaluate_runs_fold_by_seed_cells_through_dagster_and_writes_the_report(project: Path, capsys):
    # the harness is under test here, not the model's size
    argv = ["evaluate", "--folds", "1", "--seeds", "2", "--models", "hrm,flat", "--workers", "1"]
    assert main([*argv, "--config", "configs/hrm_smoke.yaml"]) == 0
    home = Path(os.environ["HRM_HOME"])
    report = json.loads((home / "reports" / "evaluation" / "latest" / "evaluation.json").read_text())
    cells = {(r["model"], r["fold"], r["seed"]) for r in report["rows"]}
    assert cells >= {
        ("hrm", 1, 42),
        ("hrm", 1, 43),
        ("flat", 1, 42),
        ("flat", 1, 43),
        ("buy_and_hold", 1, None),
    }
    assert all(
        set(r) >= {"sharpe", "total_return", "max_drawdown", "exposure", "turnover", "costs", "psr", "dsr"}
        for r in report["rows"]
    )
    assert report["summary"]["paired_sharpe_difference"]["hrm - flat"]["pairs"] == 2
    assert (home / "reports" / "evaluation" / "latest" / "evaluation.html").stat().st_size > 1000
    with dg.DagsterInstance.get() as instance:
        materialised = instance.get_materialized_partitions(dg.AssetKey("evaluation_cell"))
        runs = instance.get_runs(dg.RunsFilter(job_name="evaluation_cell_job"))
        queued = [  # launched through the instance's queue and run launcher, not in this process
            any(e.dagster_event_type == dg.DagsterEventType.RUN_ENQUEUED for e in instance.all_logs(r.run_id))
            for r in runs
        ]
    assert {str(k) for k in materialised} == {"1|42", "1|43"}
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["1|42", "1|43"] and all(queued)
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    out = capsys.readouterr().out
    assert "[2/2] fold 1 seed" in out and "hrm - flat" in out
    assert main([*argv, "--folds", "7", "--config", "configs/hrm_smoke.yaml"]) == 2
    assert "fold 7 does not exist" in capsys.readouterr().err
