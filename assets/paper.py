"""``paper_account``: the paper account trading the bars that arrived since its last run (or, for
a replay, the next ``ticks`` bars), with its record beside the backtest's expectation.

Each materialisation runs the paper loop (``paper_loop.py`` over ``hrm_core/workflows/paper.py``) and reports:
the equity curve beside the benchmark's and beside the backtest of the deciding version on the
same bars (a plot in the metadata); the rolling Sharpe of the last ``ROLLING_BARS`` bars; the
drawdown against the worst drawdown of the version's registered backtest; turnover against the
backtest's; and Evidently's drift share of the live window's features against the version's
training reference; the plot and these facts are also written to
``HRM_HOME/reports/paper/<account>/``. ``paper_within_expectation`` fails when the drawdown is
beyond the backtest's worst or the live features drifted beyond ``monitoring.max_drift_share``;
the retraining sensor (``pipelines/jobs.py``) reads the same facts.
"""

import base64
import io
import json

import dagster as dg
import duckdb
import mlflow
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource
from matplotlib.figure import Figure

from assets.monitoring import drift_frames, drifted_share
from assets.paper_loop import account_database, default_source, paper_source, run_paper
from assets.resources import HRMSettings, MlflowResource
from assets.serving import load_version
from hrm_core.core.config import hrm_home
from hrm_core.core.vocabulary import ALIAS_PRODUCTION
from hrm_core.sim.metrics import drawdown_series, sharpe_ratio
from hrm_core.workflows import paper

ROLLING_BARS = 63
BEYOND_EXPECTATION, DRIFT_SHARE = "beyond_expectation", "live_drifted_share"


class PaperConfig(dg.Config):
    """Which account trades, from which source (default: the configured one, or a replay of the
    warehouse for the static sample), with which alias; ``ticks`` bars at most per run (the
    schedule steps a replay one bar per run; a live source trades whatever arrived)."""

    source: str | None = None
    path: str | None = None
    account: str = "main"
    alias: str = ALIAS_PRODUCTION
    ticks: int | None = None


@dg.asset(group_name="paper", kinds={"duckdb", "evidently"})
def paper_account(
    context: dg.AssetExecutionContext,
    config: PaperConfig,
    settings: HRMSettings,
    warehouse: DuckDBResource,
    tracking: MlflowResource,
) -> dg.MaterializeResult:
    """The paper ledger (``HRM_HOME/paper/<account>/warehouse.duckdb``) after trading the new bars."""
    source = paper_source(config.source or default_source(settings), settings, warehouse, config.path)

    def tick_log(tick: paper.Tick) -> None:
        context.log.info(f"{tick.ts}: version {tick.version}, {len(tick.orders)} decisions")

    run = run_paper(tracking, settings, source, config.alias, config.account, None, config.ticks, tick_log)
    loaded = load_version(tracking, config.alias)
    trades_with, monitoring = loaded.config, settings.config().monitoring  # the version's costs and policy
    with duckdb.connect(str(account_database(config.account)), read_only=True) as con:
        curve = paper.equity_curve(con)
        summary = paper.performance(con, trades_with)
        benchmark = (
            paper.benchmark_equity(con, trades_with, curve.index[0]).sum(axis=1) if len(curve) else None
        )
        expected = paper.version_backtest(con, loaded, curve.index[0]) if len(curve) else None
        live = _live_features(con, loaded, monitoring.drift_window_bars)
    registered = _registered_backtest(tracking, loaded.version)
    facts = expectation(curve, summary, registered, trades_with.trading.periods_per_year)
    reference, _ = drift_frames(warehouse, list(live.columns), int(loaded.meta["fold"]), 1)
    share = drifted_share(reference, live)[0] if len(live) >= 20 and len(reference) else float("nan")
    facts[DRIFT_SHARE] = share
    facts[BEYOND_EXPECTATION] = bool(
        facts["drawdown_beyond_backtest"] or (np.isfinite(share) and share > monitoring.max_drift_share)
    )
    metadata = {
        "ticks": len(run.ticks),
        "bars": len(curve),
        "last_bar": str(curve.index[-1]) if len(curve) else "",
        "equity": float(curve["portfolio"].iloc[-1]) if len(curve) else float("nan"),
        "versions": dg.MetadataValue.json(sorted({t.version for t in run.ticks})),
        **{k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in facts.items()},
    }
    if len(curve) >= 2:
        png = _plot(curve["portfolio"], benchmark, expected)
        folder = hrm_home() / "reports" / "paper" / config.account
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "equity.png").write_bytes(png)
        (folder / "summary.json").write_text(json.dumps({**summary, **facts}, indent=1, default=float))
        image = base64.b64encode(png).decode()
        metadata["equity_curve"] = dg.MetadataValue.md(f"![paper equity](data:image/png;base64,{image})")
        metadata["report"] = dg.MetadataValue.path(str(folder))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=paper_account)
def paper_within_expectation(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Fails when the paper account's drawdown is beyond its backtest's worst, or its live features
    drifted beyond the threshold."""
    event = context.instance.get_latest_materialization_event(paper_account.key)
    metadata = event.asset_materialization.metadata
    beyond = bool(metadata[BEYOND_EXPECTATION].value)
    return dg.AssetCheckResult(
        passed=not beyond,
        metadata={
            k: metadata[k] for k in ("drawdown", "backtest_max_drawdown", DRIFT_SHARE) if k in metadata
        },
    )


def expectation(curve: pd.DataFrame, summary: dict, backtest: dict, periods_per_year: float) -> dict:
    """The paper record against its backtest's: rolling Sharpe, drawdown now against the
    backtest's worst, turnover against the backtest's."""
    returns = curve["portfolio"].pct_change().iloc[1:].to_numpy() if len(curve) > 1 else np.array([])
    recent = returns[-ROLLING_BARS:]
    drawdown = float(drawdown_series(returns)[-1]) if len(returns) else 0.0
    worst = backtest.get("test_max_drawdown", float("nan"))
    return {
        "rolling_sharpe": sharpe_ratio(recent, periods_per_year) if len(recent) > 2 else float("nan"),
        "drawdown": drawdown,
        "backtest_max_drawdown": worst,
        "drawdown_beyond_backtest": bool(np.isfinite(worst) and drawdown < worst),
        "turnover": summary.get("paper", {}).get("turnover", float("nan")),
        "backtest_turnover": backtest.get("test_turnover", float("nan")),
        "sharpe": summary.get("paper", {}).get("sharpe", float("nan")),
        "benchmark_sharpe": summary.get("benchmark", {}).get("sharpe", float("nan")),
    }


def _registered_backtest(tracking: MlflowResource, version: str) -> dict:
    """The out-of-sample backtest metrics registered with ``version`` (``test_*``)."""
    client = tracking.client()
    run_id = client.get_model_version(tracking.model_name, version).run_id
    with tracking.active():
        return dict(mlflow.get_run(run_id).data.metrics) if run_id else {}


def _live_features(con: duckdb.DuckDBPyConnection, loaded, window: int) -> pd.DataFrame:
    """The model's features over the last ``window`` bars of every symbol in the paper account."""
    columns = loaded.meta["feature_names"][0] + loaded.meta["feature_names"][1]
    return con.execute(
        f"SELECT {', '.join(columns)} FROM features.hierarchical "
        "QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) <= ?",
        [window],
    ).df()


def _plot(account: pd.Series, benchmark: pd.Series | None, expected: pd.Series | None) -> bytes:
    """The equity curves as a PNG: paper, the deciding version's backtest, the benchmark."""
    figure = Figure(figsize=(8, 3.5))
    axes = figure.subplots()
    axes.plot(account.index, account.to_numpy(), label="paper account")
    if expected is not None and len(expected):
        axes.plot(expected.index, expected.to_numpy(), "--", label="backtest of the deciding version")
    if benchmark is not None and len(benchmark):
        axes.plot(benchmark.index, benchmark.to_numpy(), label="benchmark")
    axes.set_ylabel("equity (all symbols)")
    axes.legend()
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
