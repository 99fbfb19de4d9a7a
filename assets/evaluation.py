"""The honest evaluation in Dagster: ``evaluation_cell`` trains every configured model on one
walk-forward fold with one seed and tests it on that fold's own block (a partition per
fold × seed, so the UI shows each cell and cells run as parallel runs); ``evaluation_report``
gathers the cells of the current configuration into the JSON and HTML report. Thin: the work is
``hrm_core.workflows.evaluation``."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import torch
from dagster_duckdb import DuckDBResource

from assets.resources import HRMSettings
from assets.splits import walk_forward_splits
from hrm_core.core.config import HRMConfig, hrm_home
from hrm_core.core.errors import HRMError
from hrm_core.workflows.evaluation import (
    rule_rows,
    run_cell,
    split_fold_data,
    summarise,
    with_dsr,
    write_evaluation,
)

fold_partitions = dg.DynamicPartitionsDefinition(name="evaluation_folds")
seed_partitions = dg.DynamicPartitionsDefinition(name="evaluation_seeds")
evaluation_partitions = dg.MultiPartitionsDefinition({"fold": fold_partitions, "seed": seed_partitions})


def evaluation_dir() -> Path:
    return hrm_home() / "reports" / "evaluation"


def config_key(config: HRMConfig) -> str:
    """What makes cells comparable: the whole configuration but the evaluation section."""
    body = config.model_dump(mode="json", exclude={"evaluation"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def cell_path(config: HRMConfig, fold: int, seed: int) -> Path:
    return evaluation_dir() / "cells" / config_key(config) / f"fold{fold}_seed{seed}.json"


@dg.asset(
    deps=[walk_forward_splits],
    partitions_def=evaluation_partitions,
    group_name="evaluation",
    kinds={"pytorch"},
)
def evaluation_cell(
    context: dg.AssetExecutionContext, settings: HRMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    """Every configured model (``evaluation.models``) trained on this fold with this seed, and the
    rule baselines, on the fold's own test block; the rows go to a JSON file per cell."""
    torch.set_num_threads(1)  # cells run side by side
    # a launched run carries the key as its string ("fold|seed"): parse it back into dimensions
    keys = evaluation_partitions.get_partition_key_from_str(context.partition_key).keys_by_dimension
    fold, seed = int(keys["fold"]), int(keys["seed"])
    config = settings.config()
    with warehouse.get_connection() as con:
        train_data, test_data = split_fold_data(con, config, fold)
    rows, supervised = [], {}
    for model in config.evaluation.models:
        context.log.info(f"fold {fold} seed {seed}: training {model}")
        rows.append(run_cell(config, model, fold, seed, train_data, test_data, supervised))
    rows += rule_rows(config, fold, test_data)
    path = cell_path(config, fold, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    table = "\n".join(f"| {r['model']} | {r['sharpe']:.3f} | {r['exposure']:.2f} |" for r in rows)
    return dg.MaterializeResult(
        metadata={
            "test_block": rows[0]["period"],
            "sharpe": dg.MetadataValue.md("| model | Sharpe | exposure |\n|---|---|---|\n" + table),
            "cell": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(deps=[evaluation_cell], group_name="evaluation")
def evaluation_report(context: dg.AssetExecutionContext, settings: HRMSettings) -> dg.MaterializeResult:
    """The cells of the current configuration for the folds and seeds partitioned now: per-fold
    table, mean ± std, paired differences with bootstrap CIs, DSR over every trial, box plot."""
    config = settings.config()
    instance = context.instance
    folds = [int(f) for f in instance.get_dynamic_partitions(fold_partitions.name)]
    seeds = [int(s) for s in instance.get_dynamic_partitions(seed_partitions.name)]
    paths = [cell_path(config, f, s) for f in folds for s in seeds]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise HRMError(
            f"evaluation: cells {', '.join(missing)} are not materialised; run `hrm-trading evaluate`"
        )
    rows, rules_seen = [], set()
    for path in paths:
        for row in json.loads(path.read_text()):
            if row["seed"] is None:  # a rule baseline: once per fold
                if (row["model"], row["fold"]) in rules_seen:
                    continue
                rules_seen.add((row["model"], row["fold"]))
            rows.append(row)
    frame = with_dsr(rows)
    out = write_evaluation(frame, config, evaluation_dir() / "latest")
    summary = summarise(frame)
    means = {m: round(v["sharpe_mean"], 3) for m, v in summary["models"].items()}
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(out["html"])),
            "rows": dg.MetadataValue.path(str(out["json"])),
            "mean_sharpe": dg.MetadataValue.json(means),
            "paired_sharpe_difference": dg.MetadataValue.json(summary["paired_sharpe_difference"]),
        }
    )
