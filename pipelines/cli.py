"""``hrm-trading``: run the pipeline's jobs through Dagster from the command line.

Runs go through the same Dagster instance the UI reads (``DAGSTER_HOME`` under ``HRM_HOME``), so
every CLI run, its materialisations and its asset checks appear in ``make ui``. One run at a time
holds a home (a second one waits and says so); a run that fails or is killed leaves the warehouse
and the raw data as they were before it (see ``pipelines.home``).

Only the standard library is imported at the top: ``--help`` must answer at once, and torch,
Dagster and MLflow are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from hrm_core.core.config import DEFAULT_CONFIG
from hrm_core.core.errors import HRMError
from hrm_core.core.vocabulary import RL_ALGORITHMS
from pipelines import runner
from pipelines.home import run_tags
from pipelines.summary import failure_message, format_evaluation, format_summary, write_run_summary

JOB_ALIASES = {"data": "data_job", "train": "train_job", "full": "full_job"}
SOURCES = ["sample", "csv", "parquet", "s3", "yfinance"]
SERVICE_ERRORS = ("duckdb", "mlflow", "dvc", "sqlalchemy", "botocore")
"""Packages whose exceptions reach the user as one line (what failed, what to do), not a traceback."""

EXAMPLES = {
    "run": """examples:
  hrm-trading run                                    the whole graph on the sample data
  hrm-trading run --source csv --path mydata/        your own CSV files (one or many symbols)
  hrm-trading run --job data                         ingest → validation → features → splits only
  hrm-trading run --force                            retrain even if this data and config were trained""",
    "serve": """examples:
  hrm-trading serve                                  production model on http://127.0.0.1:8080
  hrm-trading serve --model-alias staging --port 0   the latest candidate, on a free port
  curl localhost:8080/decisions/latest?symbol=SP500  what predict --json prints, over HTTP""",
    "predict": """examples:
  hrm-trading predict                                production model, every symbol's latest bar
  hrm-trading predict --model-alias staging --json   the latest candidate, as JSON
  hrm-trading predict --position 0.8                 the decisions when 80% of equity is held long""",
    "evaluate": """examples:
  hrm-trading evaluate                               hrm, flat and gru on every fold, evaluation.seeds seeds
  hrm-trading evaluate --folds 0,2 --seeds 2 --models hrm,hrm_blind
  hrm-trading evaluate --models hrm,ppo,grpo,hybrid_grpo,hmtr,flat,gru   the seed's level table""",
    "train": """examples:
  hrm-trading train                                  the graph with the supervised curriculum alone
  hrm-trading train --algo ppo                       then PPO fine-tuning on the simulator, registered
  hrm-trading train --algo hmtr --config my.yaml     the H-MTR master-worker agent""",
    "status": """examples:
  hrm-trading status                                 data version, symbols, runs, models, drift""",
    "stack": """examples:
  hrm-trading stack up                               Postgres, S3, MLflow server, Dagster daemon + UI
  eval "$(hrm-trading stack env)"; hrm-trading run   the whole graph against them (HRM_PROFILE=production)
  hrm-trading stack down                             stop them (their data stays in HRM_HOME/stack)""",
    "paper": """examples:
  hrm-trading paper                                  paper-trade the sample's last year (replayed)
  hrm-trading paper --ticks 20                       only the next 20 bars of the replay
  hrm-trading paper --source csv --path live/ --follow --every 60
                                                     trade each new bar of live/ as it arrives
  hrm-trading paper --model-alias staging --account staging   a second account, another alias""",
    "orders": """examples:
  hrm-trading orders                                 the paper account's orders for the next open
  hrm-trading orders --json                          the same, as a JSON list for a broker""",
    "data": """examples:
  hrm-trading data restore --model-version 3         the raw data version 3 was trained on
  hrm-trading data restore --model-version 3 --to old/   into another folder
  hrm-trading data show --version 3                  the data version 3 was trained on (Iceberg: each
                                                     table at its snapshot, by time travel)
  hrm-trading data show --version 3 --table clean.ohlcv --symbol SP500   those rows""",
}


def _command(commands, name: str, help_text: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, help="where bars come from (default: the preset's)")
    parser.add_argument("--path", help="file, folder or s3:// URI for csv/parquet/s3 sources")
    parser.add_argument("--symbols", nargs="+", help="symbols to ingest (sample, yfinance)")
    parser.add_argument("--config", default=None, help=f"YAML preset (default {DEFAULT_CONFIG})")
    parser.add_argument("--verbose", action="store_true", help="print Dagster's event stream too")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrm-trading",
        description=__doc__.splitlines()[0],
        epilog="state lives in $HRM_HOME (default .hrm); torch threads: $HRM_THREADS (default: the "
        "cores shared among running hrm-trading processes)",
    )
    commands = parser.add_subparsers(dest="command")
    run = _command(commands, "run", "materialise a job (default: the largest one defined)")
    run.add_argument("--job", choices=sorted(JOB_ALIASES), help="which job to run")
    run.add_argument(
        "--force", action="store_true", help="retrain and register even if nothing changed since a run"
    )
    _source_options(run)
    predict = _command(commands, "predict", "the registered model's decision for each symbol's latest bar")
    predict.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    predict.add_argument("--model-alias", default="production", help="registry alias (default production)")
    predict.add_argument(
        "--position",
        type=float,
        default=0.0,
        help="the exposure held now, a fraction of equity (+ long, − short; default 0)",
    )
    predict.add_argument("--json", action="store_true", help="print JSON for machines")
    serve = _command(
        commands,
        "serve",
        "serve the registered model over HTTP (MLflow's scoring protocol), following its alias",
    )
    serve.add_argument("--model-alias", default="production", help="registry alias (default production)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs HRM_SERVE_TOKEN set)",
    )
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to check where the alias points (default 2)",
    )
    serve.add_argument(
        "--paper-account",
        default="main",
        help="decisions read this paper account's positions unless a request gives its own (default main)",
    )
    serve.add_argument("--verbose", action="store_true", help="log every request")
    evaluate = _command(
        commands,
        "evaluate",
        "train every model on every fold with several seeds; test each on its fold's block",
    )
    evaluate.add_argument("--folds", default="all", help="'all' or fold numbers, e.g. 0,2 (default all)")
    evaluate.add_argument("--seeds", type=int, default=None, help="seeds per fold (default evaluation.seeds)")
    evaluate.add_argument(
        "--models",
        default="hrm,flat,gru",
        help="comma-separated: hrm, flat, gru, hrm_no_act, hrm_last_cycle, hrm_blind, and RL after the "
        "curriculum: ppo, grpo, hybrid_grpo, hmtr (default hrm,flat,gru)",
    )
    evaluate.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cells trained at once")
    _source_options(evaluate)
    train = _command(
        commands,
        "train",
        "run the whole graph with the algorithm chosen: the curriculum alone, or RL after it",
    )
    train.add_argument(
        "--algo",
        choices=["supervised", *RL_ALGORITHMS],
        default="supervised",
        help="the curriculum alone, or RL after it (default supervised)",
    )
    train.add_argument(
        "--force", action="store_true", help="retrain and register even if nothing changed since a run"
    )
    _source_options(train)
    paper = _command(
        commands, "paper", "paper-trade the version an alias holds, bar by bar, through the backtest's engine"
    )
    paper.add_argument(
        "--source",
        choices=["replay", "csv", "parquet", "s3", "yfinance"],
        default="replay",
        help="replay recorded bars (default), or read a live source for new bars",
    )
    paper.add_argument(
        "--path", help="replay: a file or folder of bars (default: the warehouse's); csv/parquet/s3"
    )
    paper.add_argument("--model-alias", default="production", help="registry alias (default production)")
    paper.add_argument("--account", default="main", help="paper account name (default main)")
    paper.add_argument(
        "--start", help="a new account trades from this date (replay default: a year before the end)"
    )
    paper.add_argument("--ticks", type=int, help="trade at most this many bars now")
    paper.add_argument("--follow", action="store_true", help="keep polling the source for new bars")
    paper.add_argument(
        "--every", type=float, default=60.0, help="--follow: seconds between polls (default 60)"
    )
    paper.add_argument("--config", default=None, help=f"YAML preset (default {DEFAULT_CONFIG})")
    orders = _command(commands, "orders", "the paper account's orders for the next bar's open")
    orders.add_argument(
        "--model-alias", default=None, help="decide with this alias's version (default: the ledger's)"
    )
    orders.add_argument("--account", default="main", help="paper account name (default main)")
    orders.add_argument("--json", action="store_true", help="print a JSON list of orders")
    _command(commands, "status", "what HRM_HOME holds: data version, symbols, runs, models and drift")
    data = _command(commands, "data", "the versioned data a model version was trained on")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    restore = data_commands.add_parser("restore", help="bring back the raw data a model version trained on")
    restore.add_argument("--model-version", required=True, help="registered version of hrm-trader")
    restore.add_argument(
        "--to", default=None, help="empty folder to restore into (default HRM_HOME/restored/vN)"
    )
    show = data_commands.add_parser("show", help="what a model version was trained on (Iceberg: time travel)")
    show.add_argument("--version", required=True, help="registered version of hrm-trader")
    show.add_argument("--table", default=None, help="print this table's rows at the version's snapshot")
    show.add_argument("--symbol", default=None, help="with --table: only this symbol's rows")
    show.add_argument("--rows", type=int, default=20, help="with --table: how many rows to print")
    stack = _command(
        commands,
        "stack",
        "the production topology on this machine: Postgres, an S3 server, the MLflow server on them, "
        "the Dagster daemon and webserver",
    )
    stack.add_argument("action", choices=["up", "down", "status", "env"])
    stack.add_argument("--no-dagster", action="store_true", help="up: only Postgres, S3 and MLflow")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*is currently in beta")  # Dagster's, on every import
    if not getattr(args, "verbose", False):  # MLflow's database set-up chatter stays off the terminal
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
        for name in ("mlflow", "alembic"):  # and for a process that imported it already
            logging.getLogger(name).setLevel(logging.WARNING)
    commands = {
        "run": _run,
        "predict": _predict,
        "serve": _serve,
        "evaluate": _evaluate,
        "train": _train,
        "status": _status,
        "data": _data,
        "paper": _paper,
        "orders": _orders,
        "stack": _stack,
    }
    if args.command not in commands:
        _parser().print_help()
        return 2
    try:
        return commands[args.command](args)
    except HRMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if type(error).__module__.split(".")[0] not in SERVICE_ERRORS:
            raise
        print(f"error: {service_message(error)}", file=sys.stderr)
        return 1


def service_message(error: Exception) -> str:
    """One readable line for an error from DuckDB, MLflow, DVC or S3, with what to do."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "lock" in text.lower():
        return f"{text} — another process holds the warehouse; wait for it to finish and try again"
    return f"{type(error).__module__.split('.')[0]}: {text}"


def _home_and_threads(verbose: bool = False) -> Path:
    from pipelines.home import prepare_home
    from pipelines.threads import size_threads

    home = prepare_home()
    threads = size_threads()
    if verbose:
        print(f"torch threads: {threads}", file=sys.stderr)
    return home


def _run(args: argparse.Namespace, algorithm: str | None = None) -> int:
    home = _home_and_threads(args.verbose)
    from pipelines.jobs import JOBS_BY_SIZE

    settings_args = _source_settings(
        args, force=args.force, progress=sys.stderr.isatty(), algorithm=algorithm
    )  # progress bars on a terminal; step lines only in logs and pipes
    config = runner.settings_for(settings_args).config()  # a bad config fails here, before any work
    from hrm_core.training.trainer import pick_device

    pick_device(config.training.device)  # so does a device this machine lacks
    _check_profile_services()  # and a production service that does not answer
    defs = runner.definitions_for(settings_args, args.verbose)
    defined = {job.name for job in defs.jobs}
    job_name = JOB_ALIASES[args.job] if args.job else next(j for j in JOBS_BY_SIZE if j in defined)
    if job_name not in defined:
        raise HRMError(f"job '{args.job}' is not defined yet (defined: {', '.join(sorted(defined))})")
    with runner.open_instance() as instance, runner.guarded(home, "run", defs, instance) as transaction:
        result, ingest_run_ids = runner.execute_job(defs, settings_args, job_name, config, instance)
        if result.success:
            transaction.commit()
        else:
            from pipelines.home import fail_mlflow_runs, revert_warehouse_runs

            fail_mlflow_runs(defs.resources["tracking"], result.run_id)
            revert_warehouse_runs(defs.resources["warehouse"], [result.run_id, *ingest_run_ids])
    print(format_summary(result))
    if job_name == "full_job" and result.success:
        from assets.serving import warm_served_cache

        warm_served_cache(defs.resources["tracking"])  # the next predict decides from the cache
        path = write_run_summary(result, home / "reports" / "latest" / "summary.json")
        print(f"run summary: {path}")
        if os.environ.get("HRM_PROFILE") == "production":
            print("open the UIs: `hrm-trading stack status` lists the Dagster and MLflow addresses")
        else:
            print(
                "open the UIs: `make ui` (Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000)"
            )
    if not result.success:
        print(f"error: {job_name} failed: {failure_message(result)}", file=sys.stderr)
        print("the warehouse and the raw data are as they were before this run", file=sys.stderr)
        return 1
    return 0


def _inference_threads() -> None:
    """One BLAS and OpenMP thread: the served HRM decides in single-threaded kernels on matrices of a
    few dozen rows, where more threads only add wake-ups to the tail latency (README, "Serving").
    Set before numpy loads its BLAS; ``$HRM_THREADS`` overrides."""
    threads = os.environ.get("HRM_THREADS", "1")
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)


def _predict(args: argparse.Namespace) -> int:
    """From the served cache when the local registry has not changed since it was last read (no
    Dagster, MLflow or torch to import: about a second), else through the registry."""
    _inference_threads()
    rows = None
    if os.environ.get("HRM_PROFILE", "local") == "local":
        from assets.served_cache import cached_predict

        rows = cached_predict(args.model_alias, args.symbol, args.position)
    if rows is None:
        from pipelines.home import prepare_home

        prepare_home()
        from assets.serving import predict
        from pipelines.resources import resources_for_profile

        resources = resources_for_profile()
        rows = predict(
            resources["tracking"], resources["warehouse"], args.model_alias, args.symbol, args.position
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    held = f"holding {args.position:+.2f} of equity" if args.position else "with no position held"
    print(f"{rows[0]['model']}, latest bar of each symbol, {held}:")
    if not rows[0]["tilt_deployed"]:
        print(
            "  its tilt is off (validation did not show that it pays): it trades the benchmark "
            "policy, and these are the benchmark's decisions"
        )
    for r in rows:
        print(
            f"{r['symbol']:>8} {r['bar'][:10]}  {r['action']:<11} exposure {r['position']:+.2f} "
            f"(target {r['target_exposure']:+.2f}, tilt {r['tilt'] + 0.0:+.2f})  "  # + 0.0: no "-0.00"
            f"confidence {r['confidence']:.2f}  "
            f"volatility {r['market_risk']:.2f}  "
            f"regime t/r/v {r['regime_trending']:.2f}/{r['regime_ranging']:.2f}/{r['regime_volatile']:.2f}  "
            f"segments {r['segments']}"
        )
    return 0


def _serve(args: argparse.Namespace) -> int:
    _inference_threads()
    from pipelines.home import prepare_home

    prepare_home()
    from assets.paper_loop import account_database
    from pipelines.resources import resources_for_profile
    from pipelines.server import serve

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log = logging.getLogger("hrm_trading.serve")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    resources = resources_for_profile()
    serve(
        resources["tracking"],
        resources["warehouse"],
        args.model_alias,
        args.host,
        args.port,
        args.poll_seconds,
        account_database(args.paper_account),
    )
    return 0


def _paper(args: argparse.Namespace) -> int:
    _inference_threads()
    from pipelines.home import prepare_home

    prepare_home()
    from assets.paper_loop import follow, paper_source, run_paper
    from pipelines.resources import resources_for_profile

    settings = runner.settings_for({"config_path": args.config or DEFAULT_CONFIG})
    resources = resources_for_profile()
    s3 = resources["s3"].get_client() if (args.path or "").startswith("s3://") else None
    source = paper_source(args.source, settings, resources["warehouse"], args.path, s3)

    def tick_line(tick) -> None:
        orders = ", ".join(
            f"{o.symbol} to {o.position:+.2f} ({o.side} {o.shares:.4g})" if o.side else f"{o.symbol} holds"
            for o in tick.orders.itertuples()
        )
        quarantined = f", {tick.quarantined} quarantined" if tick.quarantined else ""
        print(
            f"{str(tick.ts)[:19]}  v{tick.version}  {orders or 'no decision (warm-up)'}{quarantined}",
            flush=True,
        )

    def once():
        run = run_paper(
            resources["tracking"],
            settings,
            source,
            args.model_alias,
            args.account,
            args.start,
            args.ticks,
            tick_line,
        )
        if run.started:
            print(f"started paper account {run.account!r} trading from {run.start[:19]} ({source.kind})")
        from assets.serving import load_version

        loaded = load_version(resources["tracking"], args.model_alias)
        print(paper_summary(run.account, loaded.config))  # the costs and benchmark it trades with
        if not loaded.model.tilt_on:
            print(
                "  the version's tilt is off (validation did not show that it pays): it trades the "
                "benchmark, so the account's record is the benchmark's"
            )
        return run

    if args.follow:
        follow(once, args.every)
    else:
        once()
    return 0


def paper_summary(account: str, config) -> str:
    from assets.paper_loop import open_account
    from pipelines.summary import format_paper

    with open_account(account, read_only=True) as con:
        return format_paper(con, account, config)


def _orders(args: argparse.Namespace) -> int:
    _inference_threads()
    from pipelines.home import prepare_home

    prepare_home()
    from assets.paper_loop import next_orders
    from pipelines.resources import resources_for_profile

    orders = next_orders(resources_for_profile()["tracking"], args.account, args.model_alias)
    if args.json:
        print(json.dumps(orders, indent=2))
        return 0
    if not orders:
        print(f"paper account {args.account!r}: no orders for the next open (every position is on target)")
        return 0
    print(f"paper account {args.account!r}: orders for the next open")
    print(f"{'symbol':>8}  {'side':<4}  {'quantity':>12}  {'type':<14}  {'decided at':<19}  version")
    for o in orders:
        print(
            f"{o['symbol']:>8}  {o['side']:<4}  {o['quantity']:>12.4f}  {o['order_type']:<14}  "
            f"{o['decided_at']:<19}  {o['model']} v{o['version']} "
            f"({o['action']} to {o['target_exposure']:+.2f})"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Through the code location: the data job, then one ``evaluation_cell_job`` run per fold ×
    seed partition launched through the Dagster instance (``--workers`` queued at a time, each in
    its own process, or pod), then the report."""
    home = _home_and_threads(args.verbose)
    from assets.evaluation import fold_partitions, seed_partitions
    from hrm_core.workflows.evaluation import MODELS
    from pipelines.jobs import sync_dynamic_partitions

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise HRMError(f"--models: unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    if args.workers < 1:
        raise HRMError(
            f"--workers: {args.workers} is not a number of processes; give at least 1, e.g. --workers 2"
        )
    settings_args = _source_settings(args, models=models)
    config = runner.settings_for(settings_args).config()
    n_folds = config.splits.n_folds
    folds = list(range(n_folds)) if args.folds == "all" else _integers(args.folds, "--folds")
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise HRMError(f"--folds: fold {bad[0]} does not exist; the config has folds 0..{n_folds - 1}")
    seeds = [config.seed + i for i in range(args.seeds or config.evaluation.seeds)]
    if not seeds:
        raise HRMError("--seeds: give at least 1, e.g. --seeds 3")
    started = time.perf_counter()
    defs = runner.definitions_for(settings_args, args.verbose)
    with runner.open_instance() as instance, runner.guarded(home, "evaluate", defs, instance) as transaction:
        data, _ = runner.execute_job(defs, settings_args, "data_job", config, instance)
        if not data.success:
            print(f"error: data_job failed: {failure_message(data)}", file=sys.stderr)
            return 1
        transaction.commit()  # the cells only read the warehouse
        sync_dynamic_partitions(instance, fold_partitions.name, [str(f) for f in folds])
        sync_dynamic_partitions(instance, seed_partitions.name, [str(s) for s in seeds])
        cells = [(f, s) for f in folds for s in seeds]
        print(
            f"evaluating {', '.join(models)} on folds {folds} × seeds {seeds}: {len(cells)} cells, "
            f"{len(cells) * len(models)} trainings, {args.workers} cells at once",
            flush=True,
        )
        from pipelines.launch import run_partitions

        finished, failed = [], []

        def cell_done(cell: dict, run) -> None:
            finished.append(cell)
            ok = run.status.value == "SUCCESS"
            progress = f"[{len(finished)}/{len(cells)}] fold {cell['fold']} seed {cell['seed']}"
            print(f"{progress}: {'done' if ok else 'FAILED'}", flush=True)
            if not ok:
                failed.append((int(cell["fold"]), int(cell["seed"])))

        run_partitions(
            instance,
            home,
            "evaluation_cell_job",
            [{"fold": str(f), "seed": str(s)} for f, s in cells],
            {"resources": {"settings": {"config": {**settings_args, "project_dir": os.getcwd()}}}},
            run_tags(),
            args.workers,
            cell_done,
        )
        if failed:
            print(
                f"error: cells {failed} failed; see their runs in the Dagster UI (make ui)", file=sys.stderr
            )
            return 1
        result = defs.resolve_job_def("evaluation_report_job").execute_in_process(
            instance=instance, raise_on_error=False, tags=run_tags(), run_config=runner.CLI_RUN_CONFIG
        )
    if not result.success:
        print(f"error: evaluation_report failed: {failure_message(result)}", file=sys.stderr)
        return 1
    report = json.loads((home / "reports" / "evaluation" / "latest" / "evaluation.json").read_text())
    print(format_evaluation(report["summary"], time.perf_counter() - started))
    print(f"report: {home / 'reports' / 'evaluation' / 'latest' / 'evaluation.html'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    """``run`` with the algorithm chosen: the whole graph on the configured source, the curriculum
    and, with ``--algo``, RL after it (``rl.enabled``, ``rl.algorithm``); the model is registered,
    backtested beside the baselines and judged for promotion like any candidate."""
    args.job, args.force = "full", getattr(args, "force", False)
    return _run(args, algorithm=args.algo)


def _check_profile_services() -> None:
    """Under the production profile, fail at once when one of its services does not answer."""
    if os.environ.get("HRM_PROFILE") == "production":
        from pipelines.resources import check_production_services

        check_production_services()


def _stack(args: argparse.Namespace) -> int:
    """Start, stop or describe the local production stack, or print its environment."""
    from hrm_core.core.config import hrm_home
    from pipelines import stack

    local = stack.Stack(hrm_home() / "stack")
    if args.action == "env":
        print(stack.export_lines(local.env()))
        return 0
    if args.action == "down":
        stopped = stack.down(local)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if args.action == "up":
        print(f"starting the stack in {local.root} (logs in {local.logs}) …", flush=True)
        stack.up(local, with_dagster=not args.no_dagster)
    for name, state in stack.status(local).items():
        print(f"{name:>18}: {state}")
    if args.action == "up":
        print('next: eval "$(hrm-trading stack env)"; hrm-trading run')
    return 0


def _status(args: argparse.Namespace) -> int:
    from pipelines.home import exclusive_home, prepare_home, recover_home
    from pipelines.resources import resources_for_profile
    from pipelines.status import home_status

    home, resources = prepare_home(), resources_for_profile()
    with runner.open_instance() as instance, exclusive_home(home, "status", wait=False) as free:
        if free:  # never show a killed run's half-written state
            for note in recover_home(home, instance, resources["tracking"], resources["warehouse"]):
                print(note)
        print(
            home_status(home, resources, instance) + ("" if free else "\n(a run is in progress on this home)")
        )
    return 0


def _data(args: argparse.Namespace) -> int:
    from pipelines.home import prepare_home
    from pipelines.resources import resources_for_profile
    from pipelines.status import restore_model_data, show_model_data

    home = prepare_home()
    if args.data_command == "show":
        print(show_model_data(resources_for_profile(), args.version, args.table, args.symbol, args.rows))
        return 0
    target = Path(args.to) if args.to else home / "restored" / f"v{args.model_version}"
    path = restore_model_data(resources_for_profile(), args.model_version, target)
    print(f"restored the raw data of hrm-trader version {args.model_version} into {path}")
    print(f"train on it again: hrm-trading run --source parquet --path {path / 'raw'}")
    return 0


def _source_settings(args: argparse.Namespace, **extra) -> dict:
    """The settings every command that reads a source takes from ``_source_options``, plus ``extra``."""
    return {
        "config_path": args.config or DEFAULT_CONFIG,
        "source": args.source,
        "path": args.path,
        "symbols": args.symbols,
        **extra,
    }


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise HRMError(f"{option}: {text!r} is not a comma-separated list of integers, e.g. 0,2") from error


if __name__ == "__main__":
    sys.exit(main())
