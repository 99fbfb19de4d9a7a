"""The registry side of the loop: ``candidate_model`` (a new version of ``hrm-trader`` with the
alias ``staging``), ``backtest_report`` (the candidate, the production model and every baseline on
the fold's test bars) and ``promotion_decision`` (moves ``production`` only when the policy passes).

MLflow's stages are deprecated; the seed's "promote through stages" is carried by the aliases
``staging`` (every new candidate) and ``production`` (the model that serves). The registered model
is an MLflow pyfunc from code (``hrm_core/model/pyfunc_model.py``) over two pickle-free files,
``weights.npz`` and ``spec.json`` (``model/serving.py``: windows in, decision out); the weights-only
torch checkpoint beside it (tag ``checkpoint_uri``) is what backtests and retraining load.
"""

import base64
import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import numpy as np
import torch
from dagster_duckdb import DuckDBResource
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec

from assets.evaluation import config_key, evaluation_dir
from assets.resources import HRMSettings, MlflowResource
from assets.training import latest_metadata, lineage_hash, training_data
from hrm_core.core.config import HRMConfig, hrm_home
from hrm_core.core.vocabulary import ALIAS_PRODUCTION, ALIAS_STAGING
from hrm_core.dataset.market import MarketData, load_market_data
from hrm_core.model import pyfunc_model
from hrm_core.model.serving import INPUT_NAMES, OUTPUT_COLUMNS, save_served
from hrm_core.model.trader import TraderBase
from hrm_core.sim.backtest import MODEL_BASELINES, backtest_models, baseline_config
from hrm_core.sim.promotion import decide_promotion
from hrm_core.sim.report import metrics_table, write_report
from hrm_core.sim.results import BENCHMARK
from hrm_core.training.trainer import fit, load_trained_model, save_trained_model


def serving_signature(model: TraderBase, high: int, low: int) -> tuple[ModelSignature, dict[str, np.ndarray]]:
    """Tensor signature and a two-sample input example (named tensors) of the served model."""
    strategic, tactical = (len(names) for names in model.feature_names)
    rng = np.random.default_rng(0)
    arrays = (
        rng.standard_normal((2, high, strategic)).astype(np.float32),
        rng.standard_normal((2, low, tactical)).astype(np.float32),
        np.ones(2, np.float32),
        np.array([0.0, 1.0], np.float32),
        np.array([0.8, 0.8], np.float32),
    )
    example = dict(zip(INPUT_NAMES, arrays, strict=True))
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *x.shape[1:]), n) for n, x in example.items()])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, len(OUTPUT_COLUMNS)), "decision")])
    return ModelSignature(inputs=inputs, outputs=outputs), example


def serving_requirements() -> list[str]:
    """What the served model needs besides this package (``hrm-trading``, which is not on PyPI:
    serve it from the project's image with ``--env-manager local``): numba and numpy for the HRM,
    torch for the other architectures, and mlflow, as installed (torch without its ``+cpu`` label).
    Given explicitly, MLflow skips inferring them by loading the model in a subprocess."""
    import numba

    return [
        f"mlflow=={mlflow.__version__}",
        f"numba=={numba.__version__}",
        f"numpy=={np.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
    ]


def log_served_model(folder: Path, model: TraderBase, config: HRMConfig, saved: dict) -> ModelInfo:
    """Log ``model`` to the active run as the served pyfunc (``model/``): the served files written
    to ``folder``, and the metadata ``predict`` and the server read (features, normalisation,
    lookbacks, output columns, trading rules, fold)."""
    hf = config.hierarchical_features
    weights, spec = save_served(folder, model, config)
    signature, example = serving_signature(model, hf.high_level_lookback, hf.low_level_lookback)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=pyfunc_model.__file__,
        artifacts={"weights": str(weights), "spec": str(spec)},
        signature=signature,
        input_example=example,
        pip_requirements=serving_requirements(),
        metadata={
            "feature_names": saved["feature_names"],
            "normalization": saved["normalization"],
            "high_level_lookback": hf.high_level_lookback,
            "low_level_lookback": hf.low_level_lookback,
            "output_columns": list(OUTPUT_COLUMNS),
            "trading": config.trading.model_dump(mode="json"),
            "fold": saved["fold"],
        },
    )


LINEAGE_TAGS = ("data_version", "feature_hash", "config_hash", "git_commit", "lineage_key")
"""What each model version records about how it was made (the UI shows them as tags)."""


@dg.asset(group_name="registry", kinds={"mlflow"})
def candidate_model(
    context: dg.AssetExecutionContext, rl_finetune: dict, settings: HRMSettings, tracking: MlflowResource
) -> dg.Output:
    """Register the final model (the curriculum's, or RL's after it: ``rl_finetune``) as a new
    version of ``hrm-trader`` with alias ``staging``.

    The version is created with all its tags in one call, so a kill cannot leave a version without
    its ``checkpoint_uri`` or its lineage; a model whose lineage key is registered already is not
    registered again (``--force`` does)."""
    client = tracking.client()
    key = rl_finetune["lineage_key"]
    existing = [] if settings.force else _versions_with_lineage(tracking, key)
    if existing:
        version = existing[0]
        context.log.info(f"version {version.version} has this lineage already; not registering again")
        client.set_registered_model_alias(tracking.model_name, ALIAS_STAGING, version.version)
        return _candidate_output(
            tracking,
            version.version,
            version.run_id,
            version.source,
            rl_finetune["checkpoint"],
            reused=True,
        )
    model, config, saved = load_trained_model(rl_finetune["checkpoint"])
    parent = tracking.parent_run_id(context.run_id)
    fold_dates = _fold_dates(context.instance, saved["fold"])
    with tracking.active(), mlflow.start_run(run_id=parent):
        checkpoint = hrm_home() / "runs" / context.run_id / "model.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rl_finetune["checkpoint"], checkpoint)
        mlflow.log_artifact(str(checkpoint), "checkpoint")
        checkpoint_uri = mlflow.get_artifact_uri("checkpoint/model.pt")
        info = log_served_model(checkpoint.parent / "served", model, config, saved)
    tags = {
        "checkpoint_uri": checkpoint_uri,
        "dagster.run_id": context.run_id,
        "mlflow.run_id": parent,
        "stage_runs": rl_finetune["mlflow_run_id"],
        "fold": str(saved["fold"]),
        **{f"fold.{part}": " → ".join(dates) for part, dates in fold_dates.items()},
        **{tag: str(rl_finetune[tag]) for tag in LINEAGE_TAGS},
        "tilt.deployed": "true" if bool(model.heads.tilt_gate) else "false",
        "tilt.evidence": rl_finetune.get("tilt_reason", "not recorded"),
    }
    if rl_finetune.get("warehouse_snapshots"):  # the Iceberg snapshots it trained on (time travel)
        tags["warehouse_snapshots"] = rl_finetune["warehouse_snapshots"]
    with tracking.active():
        registered = mlflow.register_model(info.model_uri, tracking.model_name, tags=tags)
    client.set_registered_model_alias(tracking.model_name, ALIAS_STAGING, registered.version)
    return _candidate_output(
        tracking,
        str(registered.version),
        parent,
        info.model_uri,
        rl_finetune["checkpoint"],
        reused=False,
    )


def _versions_with_lineage(tracking: MlflowResource, key: str) -> list:
    """Registered versions whose lineage key is ``key`` (the newest first)."""
    versions = tracking.client().search_model_versions(
        f"name = '{tracking.model_name}' AND tags.lineage_key = '{key}'"
    )
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def _fold_dates(instance: dg.DagsterInstance, fold: int) -> dict[str, list[str]]:
    """The fold's train / validation / test dates from the latest ``walk_forward_splits``."""
    folds = latest_metadata(instance, "walk_forward_splits", "fold_dates") or []
    return folds[fold] if fold < len(folds) else {}


def _candidate_output(
    tracking: MlflowResource, version: str, run_id: str, model_uri: str, checkpoint: str, reused: bool
) -> dg.Output:
    """The candidate's value (what later assets read) and its metadata (what the UI shows: the
    MLflow run and version as links). ``checkpoint`` is the final stage's local file: a version
    found by its lineage key holds that very model, so nothing is downloaded."""
    mv = tracking.client().get_model_version(tracking.model_name, version)
    lineage = {tag: mv.tags.get(tag, "") for tag in LINEAGE_TAGS}
    value = {
        "version": version,
        "run_id": run_id,
        "checkpoint": checkpoint,
        "model_uri": model_uri,
        **lineage,
    }
    return dg.Output(
        value,
        metadata={
            "registered_model": tracking.model_name,
            "version": version,
            "aliases": ALIAS_STAGING,
            "model_uri": model_uri,
            "reused": reused,
            "mlflow_run": dg.MetadataValue.url(tracking.run_url(run_id)),
            **lineage,
        },
    )


@dg.asset(group_name="registry", kinds={"mlflow"})
def backtest_report(
    context: dg.AssetExecutionContext,
    candidate_model: dict,
    settings: HRMSettings,
    warehouse: DuckDBResource,
    tracking: MlflowResource,
) -> dg.Output:
    """The candidate, the production model (if any), the flat and GRU baselines trained on the
    same data and budget, and the rule baselines, net of costs, on every bar from the fold's test
    part to the end of the data (the test parts of this and all later folds: none was seen in
    training); metrics and reports logged to the candidate's MLflow run."""
    config = settings.config()
    fold = config.training.fold
    with warehouse.get_connection() as con:
        data = load_market_data(con, config, fold, test_to_end=True)
    candidate, _, _ = load_trained_model(candidate_model["checkpoint"])
    models = {"hrm": candidate}
    train_data = training_data(warehouse, config, fold)  # as the HRM trained: scenarios included
    for architecture in MODEL_BASELINES:
        models[architecture] = _baseline(architecture, config, train_data, candidate_model, settings.force)
    result = backtest_models(models, data, config)
    production, production_note = tracking.version_with_alias(ALIAS_PRODUCTION), None
    if production is not None:
        incumbent, _, saved = load_trained_model(
            mlflow.artifacts.download_artifacts(
                production.tags["checkpoint_uri"], tracking_uri=tracking.tracking_uri
            )
        )
        with warehouse.get_connection() as con:
            production_note = comparison_problem(con, incumbent, candidate, saved["fold"], fold)
            if production_note is None:  # its own normalisation, the same test bars
                own = load_market_data(
                    con, config, fold, test_to_end=True, normalization=saved["normalization"]
                )
        if production_note is None:
            result.runs["production"] = backtest_models(
                {"production": incumbent}, own, config, rules=False
            ).runs["production"]
        else:
            context.log.warning(f"production v{production.version} not compared: {production_note}")
    report_dir = hrm_home() / "reports" / context.run_id
    paths = write_report(
        result, report_dir, title=f"hrm-trader v{candidate_model['version']}: out-of-sample backtest"
    )
    latest = hrm_home() / "reports" / "latest"
    shutil.rmtree(latest, ignore_errors=True)
    shutil.copytree(report_dir, latest)
    summary = result.summary()
    with tracking.active(), mlflow.start_run(run_id=candidate_model["run_id"]):
        hrm = summary.loc["hrm"]
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in hrm.items() if np.isfinite(v)})
        mlflow.log_artifacts(str(report_dir), "backtest")
    table = metrics_table(summary)
    equity_png = base64.b64encode(paths["equity"].read_bytes()).decode()
    portfolio = {
        s: {k: (float(v) if np.isfinite(v) else None) for k, v in row.items()}
        for s, row in summary.iterrows()
    }
    value = {
        "portfolio": portfolio,
        "report_dir": str(report_dir),
        "production_version": str(production.version) if "production" in result.runs else None,
        "production_note": production_note,
    }
    return dg.Output(
        value,
        metadata={
            "out_of_sample": dg.MetadataValue.md(
                table.to_markdown(colalign=["left"] + ["right"] * table.shape[1], disable_numparse=True)
            ),
            "equity_curve": dg.MetadataValue.md(f"![equity](data:image/png;base64,{equity_png})"),
            "report": dg.MetadataValue.path(str(paths["html"])),
            "summary_json": dg.MetadataValue.path(str(paths["summary"])),
            "hrm_sharpe": portfolio["hrm"]["sharpe"],
            "test_period": result.period(),
        },
    )


def _baseline(
    architecture: str, config: HRMConfig, data: MarketData, candidate: dict, force: bool
) -> TraderBase:
    """The ``architecture`` baseline trained on the candidate's data with its budget; kept under
    its lineage (data, features, config, commit) so a rerun on the same inputs does not retrain it."""
    lineage = {
        tag: candidate.get(tag) for tag in ("data_version", "feature_hash", "config_hash", "git_commit")
    }
    path = hrm_home() / "checkpoints" / lineage_hash({**lineage, "baseline": architecture}) / "model.pt"
    if path.exists() and not force:
        return load_trained_model(path)[0]
    baseline = baseline_config(config, architecture)
    model = fit(baseline, data, progress=False).model  # gated on validation like the HRM
    save_trained_model(path, model, baseline, data, config.training.fold)
    return model


def latest_evaluation_difference(config: HRMConfig) -> dict[str, float] | None:
    """The paired HRM − benchmark Sharpe difference of the latest evaluation (clustered by fold),
    when that evaluation was of this configuration (None otherwise)."""
    path = evaluation_dir() / "latest" / "evaluation.json"
    if not path.exists():
        return None
    evaluation = json.loads(path.read_text())
    if config_key(HRMConfig.model_validate(evaluation["config"])) != config_key(config):
        return None
    return evaluation["summary"]["paired_sharpe_difference"].get(f"hrm - {BENCHMARK}")


def comparison_problem(
    con: duckdb.DuckDBPyConnection, incumbent: TraderBase, candidate: TraderBase, own_fold: int, fold: int
) -> str | None:
    """Why the production model cannot be compared on ``fold``'s test bars, or None: it reads other
    features, or its own training or validation reached into the test block."""
    if incumbent.feature_names != candidate.feature_names:
        return "it reads other features than the candidate"
    seen_until, test_from = con.execute(
        "SELECT (SELECT max(ts) FROM splits.rows WHERE fold = ? AND part IN ('train', 'validation')),"
        " (SELECT min(ts) FROM splits.rows WHERE fold = ? AND part = 'test')",
        [own_fold, fold],
    ).fetchone()
    if seen_until is None or test_from is None or seen_until >= test_from:
        return (
            f"it trained on fold {own_fold}, whose data runs to {seen_until}, past the test start {test_from}"
        )
    return None


def sanity_problems(portfolio: dict[str, dict]) -> list[str]:
    """Backtest numbers no correct simulation of a long/short book without leverage produces."""
    problems = []
    for strategy, row in portfolio.items():
        if row.get("max_drawdown") is None or not -1.0 <= row["max_drawdown"] <= 0.0:
            problems.append(f"{strategy}: max drawdown {row.get('max_drawdown')} outside [-1, 0]")
        if row.get("total_return") is None or row["total_return"] < -1.0:
            problems.append(f"{strategy}: total return {row.get('total_return')} below -100 %")
        if (row.get("costs") or 0.0) < 0:
            problems.append(f"{strategy}: negative costs {row['costs']}")
        if row.get("psr") is not None and not 0.0 <= row["psr"] <= 1.0:
            problems.append(f"{strategy}: PSR {row['psr']} outside [0, 1]")
    return problems


@dg.asset_check(asset=backtest_report, blocking=True)
def backtest_within_sanity_bounds(backtest_report: dict) -> dg.AssetCheckResult:
    """Drawdowns in [-1, 0], no loss beyond the capital, costs ≥ 0, PSR in [0, 1]."""
    problems = sanity_problems(backtest_report["portfolio"])
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})


@dg.asset(group_name="registry", kinds={"mlflow"})
def promotion_decision(
    candidate_model: dict, backtest_report: dict, settings: HRMSettings, tracking: MlflowResource
) -> dg.Output:
    """Apply the promotion policy; move ``production`` to the candidate only when it passes, and
    record the decision and its reasons on the model version."""
    config = settings.config()
    portfolio = backtest_report["portfolio"]
    incumbent_name = "production" if backtest_report["production_version"] else BENCHMARK
    decision = decide_promotion(
        portfolio["hrm"],
        portfolio[incumbent_name],
        incumbent_name,
        config.promotion,
        sanity_problems(portfolio),
        across_folds=latest_evaluation_difference(config),
        benchmark=portfolio[BENCHMARK] if incumbent_name == "production" else None,
    )
    client = tracking.client()
    version = candidate_model["version"]
    verdict = "promoted" if decision.promote else "rejected"
    client.set_model_version_tag(tracking.model_name, version, "promotion.decision", verdict)
    client.set_model_version_tag(
        tracking.model_name, version, "promotion.reasons", "; ".join(decision.reasons)
    )
    if decision.promote:
        client.set_registered_model_alias(tracking.model_name, ALIAS_PRODUCTION, version)
    production = tracking.version_with_alias(ALIAS_PRODUCTION)
    value = {
        "version": version,
        "decision": verdict,
        "reasons": decision.reasons,
        "compared_with": incumbent_name,
        "production_version": str(production.version) if production else None,
    }
    return dg.Output(
        value,
        metadata={
            **{k: v for k, v in value.items() if k != "reasons"},
            "reasons": dg.MetadataValue.json(decision.reasons),
        },
    )
