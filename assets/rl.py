"""``rl_finetune``: the optional RL stage after the curriculum (``rl.enabled``), with the algorithm
from config (``rl.algorithm``: PPO, GRPO, HybridGRPO or the H-MTR). Its model goes through the same
registry, backtest and promotion path as the curriculum's; with RL off it passes the curriculum's
model through unchanged, so the graph is the same either way.

Like a curriculum stage it is an MLflow run nested under the Dagster run's parent run, with the RL
settings and, per update, the episode reward, the KL to the old policy (and to the reference),
the clip fraction, the explained variance and the entropy; its checkpoint folder is named by its
lineage key, so a killed run resumes and a finished one is reused."""

import json
import os
import time

import dagster as dg
import mlflow
from dagster_duckdb import DuckDBResource

from assets.resources import HRMSettings, MlflowResource
from assets.training import GPU_OP_TAGS, finished_stage, lineage_hash, stage_metadata, training_data
from hrm_core.core.config import hrm_home
from hrm_core.rl.api import finetune
from hrm_core.training.trainer import after_rl, load_trained_model, save_trained_model

LINEAGE = ("data_version", "feature_hash", "config_hash", "git_commit")


def rl_finetune_asset(final_stage: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``rl_finetune`` on the curriculum's last stage (``curriculum_assets``)."""

    @dg.asset(
        name="rl_finetune",
        ins={"curriculum_model": dg.AssetIn(key=final_stage.key)},
        group_name="training",
        kinds={"pytorch", "mlflow"},
        op_tags=GPU_OP_TAGS,
    )
    def rl_finetune(
        context: dg.AssetExecutionContext,
        curriculum_model: dict,
        settings: HRMSettings,
        warehouse: DuckDBResource,
        tracking: MlflowResource,
    ) -> dg.Output:
        """RL fine-tuning of the curriculum's model (or, with ``rl.enabled: false``, that model as is)."""
        return finetune_stage(context, curriculum_model, settings, warehouse, tracking)

    return rl_finetune


def finetune_stage(
    context: dg.AssetExecutionContext,
    curriculum_model: dict,
    settings: HRMSettings,
    warehouse: DuckDBResource,
    tracking: MlflowResource,
) -> dg.Output:
    """Fine-tune ``curriculum_model`` with the configured RL algorithm and record it in MLflow."""
    config = settings.config()
    if not config.rl.enabled:
        context.log.info("rl.enabled is false: the candidate is the curriculum's model")
        return dg.Output(
            curriculum_model, metadata={"rl": "off", "checkpoint": curriculum_model["checkpoint"]}
        )
    algorithm = config.rl.algorithm
    lineage = {k: curriculum_model[k] for k in LINEAGE} | {
        "stage_index": "rl",
        "start": curriculum_model["lineage_key"],
    }
    lineage["lineage_key"] = lineage_hash(lineage)
    stage_dir = hrm_home() / "checkpoints" / lineage["lineage_key"]
    done = stage_dir / "stage.json"
    finished = finished_stage(context, stage_dir, f"rl_{algorithm}", settings.force, tracking)
    if finished is not None:
        return finished
    data = training_data(warehouse, config, config.training.fold)
    model, _, _ = load_trained_model(curriculum_model["checkpoint"])
    parent = tracking.parent_run_id(context.run_id)
    started = time.perf_counter()
    with (
        tracking.active() as experiment_id,
        mlflow.start_run(run_id=parent),
        mlflow.start_run(run_name=f"rl_{algorithm}", nested=True, experiment_id=experiment_id) as run,
    ):
        mlflow.set_tags(
            {"dagster.run_id": context.run_id, "kind": "stage", "stage": f"rl_{algorithm}", **lineage}
        )
        mlflow.log_params({f"rl.{k}": v for k, v in config.rl.model_dump().items()})
        context.log.info(f"RL fine-tuning ({algorithm}) from the curriculum's model")
        model, history = finetune(
            model, data, config, checkpoint_dir=stage_dir / "resume", progress=settings.progress
        )
        gated = after_rl(model, config, data)  # outcome heads retrained, the tilt gated on validation
        for phase, updates in history.items():
            for entry in updates:
                metrics = {f"{phase}.{k}": float(v) for k, v in entry.items() if k != "update"}
                mlflow.log_metrics(metrics, step=entry["update"])
        path = stage_dir / "model.pt"
        saved_config = config.model_copy(
            update={"model": config.model.model_copy(update={"architecture": _architecture(model)})}
        )
        save_trained_model(path, model, saved_config, data, config.training.fold)
        mlflow.log_artifact(str(path), "checkpoint")
        run_id = run.info.run_id
    last = history[list(history)[-1]][-1]
    value = {
        "stage": f"rl_{algorithm}",
        "steps": sum(len(updates) for updates in history.values()),
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": last["policy_loss"],
        "best_val_active_sharpe": None,
        "mean_segments": curriculum_model["mean_segments"],
        "checkpoint": str(path),
        "mlflow_run_id": run_id,
        "parent_run_id": parent,
        "tilt_deployed": gated.gate.deployed,
        "tilt_reason": gated.gate.reason,
        "warehouse_snapshots": curriculum_model.get("warehouse_snapshots", ""),
        **lineage,
    }
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, done)
    return dg.Output(value, metadata=stage_metadata(value, reused=False, tracking=tracking))


def _architecture(model) -> str:
    """The config name of ``model``'s class (the H-MTR replaces the HRM)."""
    from hrm_core.model.build import ARCHITECTURES

    return next(name for name, kind in ARCHITECTURES.items() if type(model) is kind)
