"""``hrm-trading``: run the pipeline's jobs through Dagster from the command line.

Runs go through the same Dagster instance the UI reads (``DAGSTER_HOME`` under ``HRM_HOME``), so
every CLI run, its materialisations and its asset checks appear in ``make ui``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from assets.resources import DEFAULT_CONFIG, HRMSettings, hrm_home
from hrm_core.errors import HRMError

JOB_ALIASES = {"data": "data_job", "train": "train_job", "full": "full_job"}
TRAINING_STAGES = ("hrm_stage_1_basic", "hrm_stage_2_advanced", "hrm_stage_3_full")


def prepare_home() -> Path:
    """Create ``HRM_HOME`` and its Dagster instance folder with a pool limit of 1 for DuckDB."""
    home = hrm_home()
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    (home / "reports").mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(
            yaml.safe_dump({"telemetry": {"enabled": False}, "concurrency": {"pools": {"default_limit": 1}}})
        )
    return home


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrm-trading", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="materialise a job (default: the largest one defined)")
    run.add_argument("--job", choices=sorted(JOB_ALIASES), help="which job to run")
    run.add_argument("--source", choices=["sample", "csv", "parquet", "s3", "yfinance"])
    run.add_argument("--path", help="file, folder or s3:// URI for csv/parquet/s3 sources")
    run.add_argument("--symbols", nargs="+", help="symbols to ingest (sample, yfinance)")
    run.add_argument("--config", default=None, help=f"YAML preset (default {DEFAULT_CONFIG})")
    predict = commands.add_parser(
        "predict", help="the registered model's decision for each symbol's latest bar"
    )
    predict.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    predict.add_argument("--model-alias", default="production", help="registry alias (default production)")
    predict.add_argument("--config", default=None, help=f"YAML preset (default {DEFAULT_CONFIG})")
    predict.add_argument("--json", action="store_true", help="print JSON for machines")
    evaluate = commands.add_parser(
        "evaluate", help="train every model on every fold with several seeds; test each on its fold's block"
    )
    evaluate.add_argument("--folds", default="all", help="'all' or fold numbers, e.g. 0,2 (default all)")
    evaluate.add_argument("--seeds", type=int, default=None, help="seeds per fold (default evaluation.seeds)")
    evaluate.add_argument(
        "--models",
        default="hrm,flat,gru",
        help="comma-separated: hrm, flat, gru, hrm_no_act, hrm_last_cycle, hrm_blind (default hrm,flat,gru)",
    )
    evaluate.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cells trained at once")
    evaluate.add_argument("--source", choices=["sample", "csv", "parquet", "s3", "yfinance"])
    evaluate.add_argument("--path", help="file, folder or s3:// URI for csv/parquet/s3 sources")
    evaluate.add_argument("--symbols", nargs="+", help="symbols to ingest (sample, yfinance)")
    evaluate.add_argument("--config", default=None, help=f"YAML preset (default {DEFAULT_CONFIG})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"run": _run, "predict": _predict, "evaluate": _evaluate}
    if args.command not in commands:
        _parser().print_help()
        return 2
    try:
        return commands[args.command](args)
    except HRMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    prepare_home()
    from pipelines.jobs import JOBS_BY_SIZE

    settings_args = {
        "config_path": args.config or DEFAULT_CONFIG,
        "source": args.source,
        "path": args.path,
        "symbols": args.symbols,
    }
    defs = _definitions(settings_args)
    defined = {job.name for job in defs.jobs}
    job_name = JOB_ALIASES[args.job] if args.job else next(j for j in JOBS_BY_SIZE if j in defined)
    if job_name not in defined:
        raise HRMError(f"job '{args.job}' is not defined yet (defined: {', '.join(sorted(defined))})")
    result = _execute_job(defs, settings_args, job_name)
    print(format_summary(result))
    if job_name == "full_job" and result.success:
        path = write_run_summary(result, hrm_home() / "reports" / "latest" / "summary.json")
        print(f"run summary: {path}")
        print("open the UIs: `make ui` (Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000)")
    if not result.success:
        print(f"error: {job_name} failed: {failure_message(result)}", file=sys.stderr)
        return 1
    return 0


def _predict(args: argparse.Namespace) -> int:
    prepare_home()
    from pipelines.resources import resources_for_profile
    from pipelines.serving import predict

    settings = HRMSettings(config_path=args.config or DEFAULT_CONFIG)
    resources = resources_for_profile()
    rows = predict(resources["tracking"], resources["warehouse"], settings, args.model_alias, args.symbol)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{rows[0]['model']}, latest bar of each symbol, with no position held:")
    for r in rows:
        print(
            f"{r['symbol']:>8} {r['bar'][:10]}  {r['action']:<11} exposure {r['position']:+.2f} "
            f"(target {r['target_exposure']:+.2f})  confidence {r['confidence']:.2f}  "
            f"volatility {r['market_risk']:.2f}  "
            f"regime t/r/v {r['regime_trending']:.2f}/{r['regime_ranging']:.2f}/{r['regime_volatile']:.2f}  "
            f"segments {r['segments']}"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Through the code location: the data job, then one ``evaluation_cell_job`` run per fold ×
    seed partition (``--workers`` at once, each in its own process), then the report."""
    import time
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from assets.evaluation import fold_partitions, seed_partitions
    from hrm_core.sim.evaluation import MODELS
    from pipelines.jobs import sync_dynamic_partitions

    prepare_home()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise HRMError(f"--models: unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    settings_args = {
        "config_path": args.config or DEFAULT_CONFIG,
        "source": args.source,
        "path": args.path,
        "symbols": args.symbols,
        "models": models,
    }
    config = HRMSettings(**settings_args).config()
    n_folds = config.splits.n_folds
    folds = list(range(n_folds)) if args.folds == "all" else _integers(args.folds, "--folds")
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise HRMError(f"--folds: fold {bad[0]} does not exist; the config has folds 0..{n_folds - 1}")
    seeds = [config.seed + i for i in range(args.seeds or config.evaluation.seeds)]
    if not seeds:
        raise HRMError("--seeds: give at least 1, e.g. --seeds 3")
    started = time.perf_counter()
    defs = _definitions(settings_args)
    data = _execute_job(defs, settings_args, "data_job")
    if not data.success:
        print(f"error: data_job failed: {failure_message(data)}", file=sys.stderr)
        return 1
    instance = _instance()
    sync_dynamic_partitions(instance, fold_partitions.name, [str(f) for f in folds])
    sync_dynamic_partitions(instance, seed_partitions.name, [str(s) for s in seeds])
    cells = [(f, s) for f in folds for s in seeds]
    print(
        f"evaluating {', '.join(models)} on folds {folds} × seeds {seeds}: {len(cells)} cells, "
        f"{len(cells) * len(models)} trainings, {args.workers} cells at once",
        flush=True,
    )
    failed = []
    if args.workers <= 1:
        outcomes = ((cell, _run_cell(settings_args, *cell)) for cell in cells)
    else:
        pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"))
        futures = {pool.submit(_run_cell, settings_args, *cell): cell for cell in cells}
        outcomes = ((futures[future], future.result()) for future in as_completed(futures))
    for done, ((fold, seed), ok) in enumerate(outcomes, 1):
        print(f"[{done}/{len(cells)}] fold {fold} seed {seed}: {'done' if ok else 'FAILED'}", flush=True)
        if not ok:
            failed.append((fold, seed))
    if args.workers > 1:
        pool.shutdown()
    if failed:
        print(f"error: cells {failed} failed; see their runs in the Dagster UI (make ui)", file=sys.stderr)
        return 1
    result = defs.resolve_job_def("evaluation_report_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    if not result.success:
        print(f"error: evaluation_report failed: {failure_message(result)}", file=sys.stderr)
        return 1
    report = json.loads((hrm_home() / "reports" / "evaluation" / "latest" / "evaluation.json").read_text())
    print(format_evaluation(report["summary"], time.perf_counter() - started))
    print(f"report: {hrm_home() / 'reports' / 'evaluation' / 'latest' / 'evaluation.html'}")
    return 0


def format_evaluation(summary: dict, seconds: float) -> str:
    lines = [f"\nout of sample, net of costs, each fold's own test block ({seconds:.0f} s):"]
    for model, m in summary["models"].items():
        lines.append(
            f"{model:>22}: Sharpe {m['sharpe_mean']:+.2f} ± {m['sharpe_std']:.2f}  "
            f"exposure {m['exposure_mean']:.2f}  turnover {m['turnover_mean']:.3f}  "
            f"costs {m['costs_mean']:.3f}  DSR {m['dsr_mean']:.2f}  ({m['cells']} cells)"
        )
    for pair, d in summary["paired_sharpe_difference"].items():
        lines.append(
            f"{pair:>30}: {d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] ({d['pairs']} pairs)"
        )
    return "\n".join(lines)


def _definitions(settings_args: dict):
    from pipelines.definitions import build_definitions
    from pipelines.resources import resources_for_profile

    return build_definitions({**resources_for_profile(), "settings": HRMSettings(**settings_args)})


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def _execute_job(defs, settings_args: dict, job_name: str):
    """Discover the source's symbols, make them the symbol partitions, and run ``job_name`` over all
    of them in one run on the instance the UI reads; returns the run's result."""
    from pipelines.jobs import discover_symbols, partition_range_tags, sync_symbol_partitions
    from pipelines.resources import resources_for_profile

    config = HRMSettings(**settings_args).config()
    resources = resources_for_profile()
    s3_client = resources["s3"].get_client() if (config.data.path or "").startswith("s3://") else None
    symbols = discover_symbols(config.data, s3_client)
    instance = _instance()
    sync_symbol_partitions(instance, symbols)
    print(
        f"running {job_name} on {len(symbols)} symbols from '{config.data.source}' (HRM_HOME={hrm_home()})",
        flush=True,
    )
    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, tags=partition_range_tags(symbols), raise_on_error=False
    )


def _run_cell(settings_args: dict, fold: int, seed: int) -> bool:
    """One ``evaluation_cell_job`` run (in a worker process) for the fold × seed partition."""
    import dagster as dg

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    key = dg.MultiPartitionKey({"fold": str(fold), "seed": str(seed)})
    job = _definitions(settings_args).resolve_job_def("evaluation_cell_job")
    return job.execute_in_process(instance=_instance(), partition_key=key, raise_on_error=False).success


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise HRMError(f"{option}: {text!r} is not a comma-separated list of integers, e.g. 0,2") from error


def failure_message(result) -> str:
    """The user-facing message of the first failed step or blocking check."""
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                details = {k: v.value for k, v in evaluation.metadata.items()}
                return f"blocking check '{evaluation.check_name}' failed: {details}"
    for event in result.all_events:
        if event.is_step_failure:
            info = event.step_failure_data.error
            while info.cause is not None:
                info = info.cause
            return info.message.strip()
    return "unknown failure (see the run in the Dagster UI)"


def run_metadata(result) -> dict[str, dict]:
    """Each materialised asset's metadata values, by asset name."""
    return {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def write_run_summary(result, path: Path) -> Path:
    """The run's facts as JSON: data, training stages, registry, backtest and drift."""
    meta = run_metadata(result)
    backtest = meta.get("backtest_report", {})
    facts = {
        "data_version": meta.get("dataset_version", {}).get("data_version"),
        "rows": meta.get("clean_ohlcv", {}).get("counts"),
        "stages": {name: meta[name] for name in TRAINING_STAGES if name in meta},
        "registered_model": meta.get("candidate_model"),
        "promotion": meta.get("promotion_decision"),
        "backtest": json.loads(Path(backtest["summary_json"]).read_text()) if backtest else None,
        "reports": {
            "backtest": backtest.get("report"),
            "drift": meta.get("feature_drift_report", {}).get("report"),
        },
        "drift": meta.get("feature_drift_report"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts, indent=2, default=str))
    return path


def format_summary(result) -> str:
    """Rows per symbol, data version, fold dates, training, registry, backtest and drift."""
    meta = run_metadata(result)
    lines = ["", "== summary =="]
    clean = meta.get("clean_ohlcv", {})
    for symbol, c in (clean.get("counts") or {}).items():
        lines.append(
            f"{symbol:>10}: {c['rows_in']} rows in, {c['rows_clean']} clean, "
            f"{c['rows_quarantined']} quarantined" + (f" {c['rules']}" if c["rules"] else "")
        )
    if "dataset_version" in meta:
        lines.append(f"data version (DVC md5): {meta['dataset_version']['data_version']}")
    if "hierarchical_features" in meta:
        f = meta["hierarchical_features"]
        lines.append(f"features: {f['feature_count']} columns × {f['rows']} rows in features.hierarchical")
    if "training_labels" in meta:
        lines.append(f"labels: {meta['training_labels']['task_counts']}")
    for i, fold in enumerate((meta.get("walk_forward_splits") or {}).get("fold_dates", [])):
        lines.append(
            f"fold {i}: train {fold['train'][0][:10]}→{fold['train'][1][:10]}, "
            f"validation {fold['validation'][0][:10]}→{fold['validation'][1][:10]}, "
            f"test {fold['test'][0][:10]}→{fold['test'][1][:10]}"
        )
    for name in TRAINING_STAGES:
        if name in meta:
            m = meta[name]
            best = "none" if m["best_val_loss"] is None else f"{m['best_val_loss']:.4f}"
            lines.append(
                f"{name}: {m['steps']} steps in {m['seconds']} s, loss {m['final_loss']:.4f}, "
                f"best validation loss {best}, mean ACT segments {m['mean_segments']:.2f}"
            )
    if "backtest_report" in meta:
        lines += [
            f"out of sample {meta['backtest_report']['test_period']}, net of costs (equal-weight portfolio):",
            meta["backtest_report"]["out_of_sample"],
        ]
    if "candidate_model" in meta:
        c = meta["candidate_model"]
        lines.append(f"registered {c['registered_model']} version {c['version']} (alias {c['aliases']})")
    if "promotion_decision" in meta:
        p = meta["promotion_decision"]
        production = p["production_version"]
        lines.append(
            f"promotion: {p['decision']} against {p['compared_with']}; "
            + (f"production is version {production}" if production else "no production version yet")
            + ": "
            + "; ".join(p["reasons"])
        )
    if "feature_drift_report" in meta:
        d = meta["feature_drift_report"]
        lines.append(
            f"feature drift: {d['drifted_share']:.0%} of {d['features']} features ({d['reference']})"
        )
        lines.append(f"drift report: {d['report']}")
    if "backtest_report" in meta:
        lines.append(f"backtest report: {meta['backtest_report']['report']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
