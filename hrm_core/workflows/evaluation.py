"""Honest evaluation: every model trained on every walk-forward fold with several seeds, each
tested on its own fold's test block (the blocks do not overlap), beside the rule baselines on the
same blocks, at the configuration's own budget. A cell that never trades scores a Sharpe of 0 (it
earned exactly nothing), so a model that gives up is not dropped from the means.

A *cell* is (model, fold, seed). Its row holds the equal-weight portfolio's Sharpe, total return,
max drawdown, mean absolute exposure and turnover (per symbol, then averaged), costs (share of
capital), PSR, and the active return and active Sharpe against the benchmark policy on the same
bars, all out of sample and net of costs, and whether the cell's tilt was deployed (validation
showed skill) or it traded the benchmark; the DSR of each row deflates its Sharpe by every trial
run here (all models, folds and seeds), so picking the best cell is not mistaken for skill.

The summary gives each model's mean ± std across cells, and paired differences (HRM − another
model or baseline on the same fold and seed) with a 95 % interval clustered by fold: the seeds of
a fold share its test block, so they are averaged into one difference per fold and the interval is
Student's t over the F fold means (F − 1 degrees of freedom); treating the cells as independent
covers far less than 95 %. Hansen's SPA test (``arch``) asks whether any model beats the benchmark
over the concatenated test blocks, with a stationary bootstrap for serially dependent returns.

Model variants (``MODELS``): the HRM, the flat transformer and GRU of about equal size, and the
ablations that answer the known critique of HRM: ``hrm_no_act`` (deep supervision without learned
halting), ``hrm_last_cycle`` (gradient through the whole last cycle instead of one step) and
``hrm_blind`` (strategic input zeroed: what H's features add). The seed's levels are RL after the
curriculum, from the cell's supervised HRM on the same training data (``hrm_core/rl``): ``grpo``
(Level 1), ``hybrid_grpo`` (Level 2), ``hmtr`` (Level 3, the master–worker H-MTR) and ``ppo``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from hrm_core.core.config import HRMConfig
from hrm_core.core.stats import t_interval
from hrm_core.core.vocabulary import RL_ALGORITHMS
from hrm_core.dataset.market import MarketData, load_market_data
from hrm_core.model.trader import TraderBase
from hrm_core.sim.backtest import backtest_models, baseline_config
from hrm_core.sim.baselines import BASELINES
from hrm_core.sim.metrics import deflated_sharpe_ratio, performance_summary
from hrm_core.sim.results import BENCHMARK, BacktestResult

ROW_COLUMNS = ("model", "fold", "seed", "sharpe", "total_return", "max_drawdown", "exposure", "turnover")
ROW_COLUMNS += ("costs", "psr", "dsr", "active_return", "active_sharpe")
SPA_REPS = 1000
SPA_BLOCK = 10  # bars: the stationary bootstrap's mean block length


def _no_act(config: HRMConfig) -> HRMConfig:
    stages = [stage.model_copy(update={"act": False}) for stage in config.training.curriculum]
    return config.model_copy(update={"training": config.training.model_copy(update={"curriculum": stages})})


def _last_cycle(config: HRMConfig) -> HRMConfig:
    return config.model_copy(update={"model": config.model.model_copy(update={"gradient": "last_cycle"})})


def _blind(data: MarketData) -> MarketData:
    return dataclasses.replace(data, strategic=np.zeros_like(data.strategic))


# name -> (config transform, data transform)
MODELS: dict[str, tuple[Callable[[HRMConfig], HRMConfig], Callable[[MarketData], MarketData]]] = {
    "hrm": (lambda c: c, lambda d: d),
    "flat": (lambda c: baseline_config(c, "flat"), lambda d: d),
    "gru": (lambda c: baseline_config(c, "gru"), lambda d: d),
    "hrm_no_act": (_no_act, lambda d: d),
    "hrm_last_cycle": (_last_cycle, lambda d: d),
    "hrm_blind": (lambda c: c, _blind),
    **{name: (lambda c: c, lambda d: d) for name in RL_ALGORITHMS},  # fine-tuned after the curriculum
}


def split_fold_data(
    con: duckdb.DuckDBPyConnection, config: HRMConfig, fold: int
) -> tuple[MarketData, MarketData]:
    """(training data with scenario symbols, test data) of ``fold`` from warehouse ``con``: the test
    part is the fold's own block only, so the folds' blocks do not overlap."""
    from hrm_core.workflows.train import with_scenarios

    data = load_market_data(con, config, fold)
    return with_scenarios(data, config), data


def run_cell(
    config: HRMConfig,
    model: str,
    fold: int,
    seed: int,
    train_data: MarketData,
    test_data: MarketData,
    supervised: dict[str, TraderBase] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``fold`` with ``seed`` and backtest it on the fold's own test block. The
    RL models fine-tune the cell's supervised HRM; ``supervised`` (one dict per cell) keeps that
    model so the ``hrm`` row and every RL row of a cell train it once (seeded: the same weights)."""
    from hrm_core.training.trainer import after_rl, fit

    to_config, to_data = MODELS[model]
    cell_config = to_config(config)
    cell_config = cell_config.model_copy(
        update={"seed": seed, "training": cell_config.training.model_copy(update={"fold": fold})}
    )
    shared = supervised is not None and (model == "hrm" or model in RL_ALGORITHMS)
    if shared and "hrm" in supervised:
        trained = copy.deepcopy(supervised["hrm"])
    else:
        trained = fit(cell_config, to_data(train_data), progress=False).model  # its tilt gated on validation
        if shared:
            supervised["hrm"] = copy.deepcopy(trained)
    if model in RL_ALGORITHMS:
        from hrm_core.rl.api import finetune

        trained, _ = finetune(trained, to_data(train_data), cell_config, model, progress=False)
        trained = after_rl(trained, cell_config, to_data(train_data)).model
    act = any(stage.act for stage in cell_config.training.curriculum)  # as it trained
    result = backtest_models({model: trained}, to_data(test_data), cell_config, act=act, rules=False)
    return _row(result, model, fold, seed) | {"tilt_deployed": bool(trained.heads.tilt_gate)}


def rule_rows(config: HRMConfig, fold: int, test_data: MarketData) -> list[dict[str, Any]]:
    """The benchmark policy and the rule baselines on ``fold``'s test block (seed-free)."""
    result = backtest_models({}, test_data, config)
    return [_row(result, name, fold, None) for name in (BENCHMARK, *BASELINES)]


def _row(result: BacktestResult, strategy: str, fold: int, seed: int | None) -> dict[str, Any]:
    returns = result.portfolio_returns(strategy)
    runs = result.runs[strategy].values()
    summary = performance_summary(
        returns.to_numpy(),
        periods_per_year=result.periods_per_year,
        costs=sum(run.costs for run in runs) / (len(runs) * result.initial_capital),
    )
    positions, active = result.position_stats(strategy), result.active_stats(strategy)
    flat = not np.any(returns.to_numpy())  # never traded: it earned exactly 0, not an undefined ratio
    return {
        "model": strategy,
        "fold": fold,
        "seed": seed,
        "sharpe": 0.0 if flat else summary["sharpe"],
        "total_return": summary["total_return"],
        "max_drawdown": summary["max_drawdown"],
        "exposure": positions["mean_abs_exposure"],
        "turnover": positions["turnover"],
        "costs": summary["costs"],
        "psr": summary["psr"],
        "active_return": active["active_return"],
        "active_sharpe": active["active_sharpe"],
        "period": result.period(),
        "returns": returns.to_numpy().tolist(),
    }


def with_dsr(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows in (model, fold, seed) order, each with its DSR against every model trial's Sharpe."""
    frame = pd.DataFrame(rows)
    order = {name: i for i, name in enumerate(dict.fromkeys([*MODELS, *BASELINES, *frame["model"]]))}
    frame = frame.sort_values(
        ["model", "fold", "seed"], key=lambda c: c.map(order) if c.name == "model" else c
    )
    frame = frame.reset_index(drop=True)
    trials = [_per_period_sharpe(r) for r in frame.loc[frame["seed"].notna(), "returns"]]
    frame["dsr"] = [
        deflated_sharpe_ratio(np.asarray(r), trials) if len(trials) > 1 else np.nan for r in frame["returns"]
    ]
    return frame


def _per_period_sharpe(returns: list[float]) -> float:
    r = np.asarray(returns)
    return float(r.mean() / r.std(ddof=1)) if r.std(ddof=1) > 0 else 0.0


def fold_clustered_interval(diff: pd.Series) -> dict[str, float]:
    """Mean and 95 % interval of paired differences indexed by (fold, seed): one mean per fold,
    then Student's t over the fold means (F − 1 degrees of freedom); no interval from one fold."""
    per_fold = diff.groupby(level="fold").mean().to_numpy()
    mean, low, high = t_interval(per_fold)
    return {"mean": mean, "ci_low": low, "ci_high": high, "folds": len(per_fold), "pairs": len(diff)}


def spa_test(frame: pd.DataFrame, seed: int = 0) -> dict[str, Any] | None:
    """Hansen's SPA test (``arch.bootstrap.SPA``): can any model beat the benchmark policy? Each
    model's bars are its seeds' mean return on each fold's block, the blocks concatenated in fold
    order, against the benchmark's on the same bars; p-values (lower, consistent, upper) of the
    null that none does."""
    from arch.bootstrap import SPA

    bench = frame[frame["model"] == BENCHMARK].sort_values("fold")
    models = [
        m for m in dict.fromkeys(frame["model"]) if frame.loc[frame["model"] == m, "seed"].notna().all()
    ]
    if bench.empty or not models:
        return None
    folds = bench["fold"].tolist()
    benchmark = np.concatenate([np.asarray(r) for r in bench["returns"]])
    columns = []
    for model in models:
        cells = frame[frame["model"] == model]
        if sorted(set(cells["fold"])) != sorted(folds):
            return None
        per_fold = [
            np.mean(np.stack(cells.loc[cells["fold"] == f, "returns"].map(np.asarray)), axis=0) for f in folds
        ]
        columns.append(np.concatenate(per_fold))
    spa = SPA(-benchmark, -np.column_stack(columns), block_size=SPA_BLOCK, reps=SPA_REPS, seed=seed)
    spa.compute()
    return {"models": models, "bars": int(benchmark.size), **{k: float(v) for k, v in spa.pvalues.items()}}


def summarise(frame: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """Per model: mean and std of every metric across cells; paired Sharpe differences of the HRM
    against every other model, the benchmark and the rule baselines on the same folds (and seeds,
    for models), with a fold-clustered 95 % interval; the same for each model's active Sharpe
    against the benchmark; and the SPA test of all models against the benchmark."""
    metrics = [c for c in ROW_COLUMNS if c not in ("model", "fold", "seed")]
    per_model = {
        model: {
            **{f"{m}_mean": float(group[m].mean()) for m in metrics},
            **{f"{m}_std": float(group[m].std(ddof=1)) if len(group) > 1 else 0.0 for m in metrics},
            "cells": len(group),
            **(
                {"tilt_deployed_cells": int(group["tilt_deployed"].fillna(False).astype(bool).sum())}
                if "tilt_deployed" in group
                else {}
            ),
        }
        for model, group in frame.groupby("model", sort=False)
    }
    hrm = frame[frame["model"] == "hrm"].set_index(["fold", "seed"])["sharpe"]
    paired = {}
    for other, group in frame[frame["model"] != "hrm"].groupby("model", sort=False):
        if group["seed"].notna().all():
            diff = hrm - group.set_index(["fold", "seed"])["sharpe"]
        else:  # a rule baseline or the benchmark: the same block for every seed
            diff = hrm - hrm.index.get_level_values("fold").map(group.set_index("fold")["sharpe"]).to_numpy()
        diff = diff.dropna()
        if len(diff):
            paired[f"hrm - {other}"] = fold_clustered_interval(diff)
    active = {
        model: fold_clustered_interval(group.set_index(["fold", "seed"])["active_sharpe"])
        for model, group in frame[frame["seed"].notna()].groupby("model", sort=False)
    }
    return {
        "models": per_model,
        "paired_sharpe_difference": paired,
        "active_sharpe": active,
        "spa_vs_benchmark": spa_test(frame, seed),
    }


def write_evaluation(frame: pd.DataFrame, config: HRMConfig, out_dir: str | Path) -> dict[str, Path]:
    """``evaluation.json`` (rows and summary), ``evaluation.html`` and ``sharpe_boxplot.png``."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = frame.drop(columns=["returns"])
    summary = summarise(frame)
    payload = {
        "config": config.model_dump(mode="json"),
        "rows": json.loads(rows.to_json(orient="records")),
        "summary": summary,
    }
    paths = {
        "json": out / "evaluation.json",
        "html": out / "evaluation.html",
        "boxplot": out / "sharpe_boxplot.png",
    }
    paths["json"].write_text(json.dumps(payload, indent=2))
    models = list(dict.fromkeys(frame["model"]))
    fig, ax = plt.subplots(figsize=(1.4 * len(models) + 2, 4))
    ax.boxplot([frame.loc[frame["model"] == m, "sharpe"].dropna() for m in models], tick_labels=models)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(title="Out-of-sample Sharpe per fold × seed (net of costs)", ylabel="Sharpe")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(paths["boxplot"], dpi=110)
    plt.close(fig)
    per_fold = rows.pivot_table(index="model", columns="fold", values="sharpe", aggfunc="mean", sort=False)
    means = pd.DataFrame(summary["models"]).T[
        [f"{m}_{s}" for m in ("sharpe", "active_sharpe", "exposure", "turnover") for s in ("mean", "std")]
    ]
    paired = pd.DataFrame(summary["paired_sharpe_difference"]).T
    active = pd.DataFrame(summary["active_sharpe"]).T
    spa = summary["spa_vs_benchmark"]
    spa_text = (
        f"<p>SPA test, H0: no model beats the benchmark ({', '.join(spa['models'])}; {spa['bars']} bars): "
        f"p = {spa['consistent']:.3f} (consistent), {spa['lower']:.3f} (lower), "
        f"{spa['upper']:.3f} (upper)</p>"
        if spa
        else ""
    )
    image = base64.b64encode(paths["boxplot"].read_bytes()).decode()
    periods = rows.groupby("fold")["period"].first().to_frame("test block")
    html = (
        "<html><head><meta charset='utf-8'><title>HRM evaluation</title></head><body>"
        "<h1>Walk-forward evaluation: every fold × seed, out of sample, net of costs</h1>"
        f"{periods.to_html()}<h2>Sharpe per fold (mean over seeds)</h2>"
        f"{per_fold.to_html(float_format='%.3f')}"
        f"<h2>Mean ± std across cells</h2>{means.to_html(float_format='%.3f')}"
        "<h2>Paired Sharpe differences (95 % interval clustered by fold)</h2>"
        f"{paired.to_html(float_format='%.3f')}"
        f"<h2>Active Sharpe against the benchmark (95 % interval clustered by fold)</h2>"
        f"{active.to_html(float_format='%.3f')}{spa_text}"
        f"<img src='data:image/png;base64,{image}'/>"
        f"<h2>Every cell</h2>{rows.to_html(float_format='%.4f', index=False)}</body></html>"
    )
    paths["html"].write_text(html)
    return paths
