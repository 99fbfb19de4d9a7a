"""The curriculum as assets generated from ``training.curriculum``, one per stage
(``hrm_stage_1_basic`` → ``hrm_stage_2_advanced`` → ``hrm_stage_3_full`` for the presets), each
warm-started from the one before.

Each stage is an MLflow run nested under the Dagster run's parent run, with the config, every
logged step, the data version (DVC md5), the features and their hash, the git commit, the seed and
the device, and the stage's model as an artifact. Stage 1 starts from the production model when
the registry has one that reads the same features, and then trains with EWC against the Fisher
information of that model's own training data (retraining without forgetting); otherwise it
starts from scratch. The ops ask Kubernetes for a GPU; locally they run on the CPU.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import numpy as np
from dagster_duckdb import DuckDBResource

from assets.resources import HRMSettings, MlflowResource
from assets.splits import walk_forward_splits
from assets.versioning import dataset_version
from hrm_core.core.checkpoint import load_checkpoint
from hrm_core.core.config import HRMConfig, StageConfig, hrm_home
from hrm_core.core.errors import ConfigError
from hrm_core.core.ewc import EWC
from hrm_core.data.iceberg import snapshots_of
from hrm_core.dataset.market import MarketData, load_market_data
from hrm_core.model.serving import ServedModel, save_served
from hrm_core.model.trader import TraderBase
from hrm_core.training.ewc import ewc_from
from hrm_core.training.trainer import (
    fit,
    load_trained_model,
    pick_device,
    save_trained_model,
    validation_trials,
)
from hrm_core.workflows.train import with_scenarios

GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
}


def training_data(warehouse: DuckDBResource, config: HRMConfig, fold: int) -> MarketData:
    """Fold ``fold`` of the warehouse as training data, with scenario symbols for scarce tasks."""
    return training_read(warehouse, config, fold)[0]


def training_read(warehouse: DuckDBResource, config: HRMConfig, fold: int) -> tuple[MarketData, str]:
    """``training_data`` and the Iceberg snapshots that very read saw (JSON; empty locally)."""
    with warehouse.get_connection() as con:
        return with_scenarios(load_market_data(con, config, fold), config), snapshots_of(con)


def git_commit(project_dir: str) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def latest_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> Any:
    """A metadata value of ``asset``'s latest materialisation (None when there is none)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(key)
    return None if value is None else value.value


def start_from_production(
    tracking: MlflowResource,
    warehouse: DuckDBResource,
    config: HRMConfig,
    data: MarketData,
    data_version: str,
) -> tuple[TraderBase | None, EWC | None, str | None]:
    """The production model and its EWC term when it can be retrained on ``data``; nothing when it
    was trained on this very data with this very config (there is nothing new to learn, and the
    run then reproduces, and reuses, production's own lineage)."""
    version = tracking.version_with_alias("production")
    if version is None:
        return None, None, None
    same = (version.tags.get("data_version"), version.tags.get("config_hash"))
    if same == (data_version, lineage_hash(config.model_dump(mode="json"))):
        return None, None, None
    path = mlflow.artifacts.download_artifacts(version.tags["checkpoint_uri"])
    model, old_config, saved = load_trained_model(path)
    if model.feature_names != (data.strategic_names, data.tactical_names):
        return None, None, None
    ewc = None
    if config.training.ewc_strength > 0:
        ewc = ewc_from(model, training_data(warehouse, old_config, saved["fold"]), config)
    return model, ewc, str(version.version)


def stage_lineage(
    config: HRMConfig, data_version: str, features: dict, index: int, start: str, commit: str
) -> dict[str, str]:
    """What a stage's model is a function of, and the key that names it: data version, feature
    and config hashes, git commit, the stage and where it starts from. Same key, same model: a
    rerun reuses the stage's checkpoint (or resumes it, if a kill interrupted it)."""
    lineage = {
        "data_version": data_version,
        "feature_hash": lineage_hash(features),
        "config_hash": lineage_hash(config.model_dump(mode="json")),
        "git_commit": commit,
        "stage_index": str(index),
        "start": start,
    }
    return {**lineage, "lineage_key": lineage_hash(lineage)}


def lineage_hash(value: Any) -> str:
    """A short, stable hash of a JSON-able value: the names of checkpoints and lineage keys."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def train_stage(
    context: dg.AssetExecutionContext,
    index: int,
    names: tuple[str, ...],
    previous: dict | None,
    settings: HRMSettings,
    warehouse: DuckDBResource,
    tracking: MlflowResource,
) -> dg.Output:
    """Train curriculum stage ``index`` and record it in MLflow; returns where its model is.

    The checkpoint folder is named by the stage's lineage key, not the Dagster run: a killed
    stage resumes from its last checkpoint in the next run, and a stage that already finished
    with the same data, config and start is reused (``--force`` retrains it)."""
    config = settings.config()
    curriculum = config.training.curriculum
    configured = tuple(stage_asset_name(i, stage) for i, stage in enumerate(curriculum))
    if configured != names:
        raise ConfigError(
            f"training.curriculum is now {', '.join(configured)}, but the code location was loaded "
            f"with {', '.join(names)}; reload the code location (the UI's Reload, or restart the CLI)"
        )
    stage = curriculum[index]
    fold = config.training.fold
    data, snapshots = training_read(warehouse, config, fold)
    data_version = latest_metadata(context.instance, dataset_version.key.to_user_string(), "data_version")
    model, ewc, base_version = start_from_production(tracking, warehouse, config, data, data_version)
    if previous is not None:  # warm start from the previous stage; EWC stays anchored at production
        model, _, _ = load_trained_model(previous["checkpoint"])
        if previous.get("ewc_version") != base_version:
            ewc, base_version = None, None
    start = (
        previous["lineage_key"] if previous else f"production v{base_version}" if base_version else "scratch"
    )
    features = {"strategic": list(data.strategic_names), "tactical": list(data.tactical_names)}
    lineage = stage_lineage(
        config, data_version or "unknown", features, index, start, git_commit(settings.project_dir)
    )
    stage_dir = hrm_home() / "checkpoints" / lineage["lineage_key"]
    done = stage_dir / "stage.json"
    finished = finished_stage(context, stage_dir, stage.name, settings.force, tracking)
    if finished is not None:
        return finished
    resume = stage_dir / "resume" / "last.pt"
    if resume.exists():
        step = load_checkpoint(resume)["step"]
        context.log.info(f"resuming stage {stage.name} from its checkpoint at step {step} (a killed run)")
    stage_config = config.model_copy(
        update={"training": config.training.model_copy(update={"curriculum": [stage]})}
    )
    parent = tracking.parent_run_id(context.run_id)
    started = time.perf_counter()
    with (
        tracking.active() as experiment_id,
        mlflow.start_run(run_id=parent),
        mlflow.start_run(run_name=stage.name, nested=True, experiment_id=experiment_id) as run,
    ):
        mlflow.set_tags(
            {
                "dagster.run_id": context.run_id,
                "kind": "stage",
                "stage": stage.name,
                **lineage,
                "seed": config.seed,
                "device": str(pick_device(config.training.device)),
                "fold": fold,
                "warm_start": "previous stage" if previous else start,
                "ewc_anchor": f"production v{base_version}" if ewc is not None else "none",
            }
        )
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        mlflow.log_dict(features, "features.json")
        mlflow.log_params(
            {
                "stage": stage.name,
                "H_cycles": stage.H_cycles,
                "L_cycles": stage.L_cycles,
                "act": stage.act,
                "episodes": stage.episodes,
                **config.model.model_dump(),
            }
        )
        result = fit(  # in this process, or training.processes processes under torchrun
            stage_config,
            data,
            checkpoint_dir=stage_dir / "resume",
            progress=settings.progress,
            model=model,
            ewc=ewc,
            prior_trials=previous.get("validation_trials") if previous else None,
        )
        for entry in result.history:
            mlflow.log_metrics(
                {k: float(v) for k, v in entry.items() if k not in ("stage", "step")}, step=entry["step"]
            )
        path = stage_dir / "model.pt"
        save_trained_model(path, result.model, config, data, fold)
        mlflow.log_artifact(str(path), "checkpoint")
        stage_run_id = run.info.run_id
    history = result.history
    scores = [h["val_score"] for h in history if "val_score" in h]  # smoothed, as selection reads them
    value = {
        "stage": stage.name,
        "steps": len(history),
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": history[-1]["loss"] if history else None,
        "best_val_active_sharpe": max(scores) if scores else None,
        "mean_segments": history[-1]["segments"] if history else None,
        "checkpoint": str(path),
        "mlflow_run_id": stage_run_id,
        "parent_run_id": parent,
        "ewc_version": base_version if ewc is not None else None,
        "validation_trials": [*(previous or {}).get("validation_trials", []), *validation_trials(history)],
        "tilt_deployed": result.gate.deployed,
        "tilt_reason": result.gate.reason,
        "warehouse_snapshots": snapshots,
        **lineage,
    }
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, done)  # written last: a stage is reusable only once it is complete
    return dg.Output(value, metadata=stage_metadata(value, reused=False, tracking=tracking))


def finished_stage(
    context: dg.AssetExecutionContext, stage_dir: Path, name: str, force: bool, tracking: MlflowResource
) -> dg.Output | None:
    """The output of the stage that finished in ``stage_dir`` (same lineage), or None when there is
    none or ``force`` asks to retrain (its folder is then cleared)."""
    done = stage_dir / "stage.json"
    if force:
        shutil.rmtree(stage_dir, ignore_errors=True)
        return None
    if not done.exists():
        return None
    value = json.loads(done.read_text())
    context.log.info(f"reusing stage {name} of MLflow run {value['mlflow_run_id']} (same lineage)")
    return dg.Output(value, metadata=stage_metadata(value, reused=True, tracking=tracking))


def stage_metadata(value: dict, reused: bool, tracking: MlflowResource) -> dict:
    """What the UI shows for a stage: its numbers, its lineage and a link to its MLflow run."""
    shown = (
        "stage",
        "steps",
        "seconds",
        "final_loss",
        "best_val_active_sharpe",
        "mean_segments",
        "mlflow_run_id",
    )
    return {
        **{k: value.get(k) for k in shown},  # .get: a stage reused from before a metric existed
        **{k: value[k] for k in ("data_version", "feature_hash", "config_hash", "git_commit", "lineage_key")},
        "mlflow_run": dg.MetadataValue.url(tracking.run_url(value["mlflow_run_id"])),
        "tilt": "deployed" if value.get("tilt_deployed") else "off: trades the benchmark",
        "tilt_evidence": value.get("tilt_reason", "not recorded"),
        "reused": reused,
        "checkpoint": dg.MetadataValue.path(value["checkpoint"]),
    }


def stage_asset_name(index: int, stage: StageConfig) -> str:
    """``hrm_stage_<n>_<name>``: the asset that trains curriculum stage ``index`` (from 0)."""
    return f"hrm_stage_{index + 1}_{stage.name}"


def curriculum_assets(curriculum: list[StageConfig]) -> list[dg.AssetsDefinition]:
    """One asset per stage of ``training.curriculum`` (any number), each warm-started from the one
    before; the first starts from the production model or from scratch."""
    names = tuple(stage_asset_name(i, stage) for i, stage in enumerate(curriculum))
    stages: list[dg.AssetsDefinition] = []
    for index, stage in enumerate(curriculum):
        description = (
            f"Curriculum stage {index + 1} of {len(curriculum)}, {stage.name}: H {stage.H_cycles} × "
            f"L {stage.L_cycles} cycles{', ACT halting' if stage.act else ''}, {stage.episodes} episodes, "
            + ("warm-started from the stage before." if index else "from the production model or scratch.")
        )
        stages.append(_stage_asset(index, names, stages[-1].key if stages else None, description))
    return stages


def _stage_asset(
    index: int, names: tuple[str, ...], previous: dg.AssetKey | None, description: str
) -> dg.AssetsDefinition:
    common = {
        "name": names[index],
        "group_name": "training",
        "kinds": {"pytorch", "mlflow"},
        "op_tags": GPU_OP_TAGS,
        "description": description,
    }
    if previous is None:

        @dg.asset(
            deps=[walk_forward_splits, dataset_version],
            **common,
        )
        def first_stage(
            context: dg.AssetExecutionContext,
            settings: HRMSettings,
            warehouse: DuckDBResource,
            tracking: MlflowResource,
        ) -> dg.Output:
            return train_stage(context, index, names, None, settings, warehouse, tracking)

        return first_stage

    @dg.asset(
        ins={"previous_stage": dg.AssetIn(key=previous)},
        **common,
    )
    def next_stage(
        context: dg.AssetExecutionContext,
        previous_stage: dict,
        settings: HRMSettings,
        warehouse: DuckDBResource,
        tracking: MlflowResource,
    ) -> dg.Output:
        return train_stage(context, index, names, previous_stage, settings, warehouse, tracking)

    return next_stage


def checkpoint_check(final_stage: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """The blocking check on the curriculum's last stage: its model loads and serves."""

    @dg.asset_check(asset=final_stage, name="checkpoint_loads", blocking=True)
    def checkpoint_loads(final: dict) -> dg.AssetCheckResult:
        """The final stage's model file loads (weights only) and, written as the served files and
        read back, gives a finite decision on zeros."""
        return _served_check(final)

    return checkpoint_loads


def _served_check(final: dict) -> dg.AssetCheckResult:
    model, config, _ = load_trained_model(final["checkpoint"])
    hf = config.hierarchical_features
    strategic, tactical = (len(names) for names in model.feature_names)
    with tempfile.TemporaryDirectory(prefix="hrm-served-") as folder:
        served = ServedModel.load(*save_served(Path(folder), model, config))
    decision = served.decide(
        np.zeros((1, hf.high_level_lookback, strategic)),
        np.zeros((1, hf.low_level_lookback, tactical)),
        np.ones(1),
        np.zeros(1),
        np.ones(1),
    )
    return dg.AssetCheckResult(
        passed=bool(np.isfinite(decision).all()),
        metadata={"parameters": sum(p.numel() for p in model.parameters())},
    )
