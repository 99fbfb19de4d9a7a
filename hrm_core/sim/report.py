"""Backtest reports: four PNG figures, one self-contained HTML page (figures embedded) with the
metrics table of the HRM beside every baseline, and ``summary.json`` with each strategy's
``performance_summary`` (portfolio and per symbol). Figures are drawn on ``matplotlib.figure.Figure``
objects, not pyplot, so reports can be written from any thread without a display."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hrm_core.sim.metrics import drawdown_series, format_metric, performance_summary
from hrm_core.sim.results import BacktestResult

TABLE_COLUMNS = [
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "psr",
    "dsr",
    "n_trades",
    "trade_win_rate",
    "exposure",
    "turnover",
    "costs",
    "brier",  # the models' p_up against the realised outcome (0.25: a coin; lower is better)
]
FIGURES = {
    "equity": "equity_drawdown.png",
    "positions": "positions.png",
    "act_segments": "act_segments.png",
    "regimes": "regimes.png",
}


def write_report(
    result: BacktestResult, directory: str | Path, title: str = "HRM backtest"
) -> dict[str, Path]:
    """Write the figures, ``report.html`` and ``summary.json`` into ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    paths = {name: directory / file for name, file in FIGURES.items()}
    _equity_figure(result).savefig(paths["equity"], dpi=110)
    _positions_figure(result).savefig(paths["positions"], dpi=110)
    _segments_figure(result).savefig(paths["act_segments"], dpi=110)
    _regimes_figure(result).savefig(paths["regimes"], dpi=110)
    paths["summary"] = directory / "summary.json"
    paths["summary"].write_text(json.dumps(_summary_json(result, summary), indent=2, allow_nan=False))
    paths["html"] = directory / "report.html"
    paths["html"].write_text(_html(title, result, summary, paths))
    return paths


def metrics_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The report's columns of ``BacktestResult.summary()``, strategies as rows, as formatted text."""
    columns = [c for c in TABLE_COLUMNS if c in summary.columns]
    return pd.DataFrame({c: [format_metric(c, v) for v in summary[c]] for c in columns}, index=summary.index)


def _equity_figure(result: BacktestResult) -> Figure:
    figure = Figure(figsize=(10, 6), layout="constrained")
    equity_ax, drawdown_ax = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for strategy in result.runs:
        returns = result.portfolio_returns(strategy)
        wide = 2.0 if strategy == "hrm" else 1.0
        equity_ax.plot(returns.index, np.cumprod(1 + returns.to_numpy()), label=strategy, linewidth=wide)
        drawdown_ax.plot(returns.index, drawdown_series(returns.to_numpy()), linewidth=wide)
    equity_ax.set(title="Equal-weight portfolio, out of sample, net of costs", ylabel="growth of 1")
    equity_ax.legend(fontsize=8)
    drawdown_ax.set(ylabel="drawdown")
    return figure


def _positions_figure(result: BacktestResult) -> Figure:
    symbols = list(result.close)
    figure = Figure(figsize=(10, 3 * len(symbols)), layout="constrained")
    for ax, symbol in zip(np.atleast_1d(figure.subplots(len(symbols), 1)), symbols, strict=True):
        ax.plot(result.close[symbol].index, result.close[symbol].to_numpy(), color="0.4", linewidth=1)
        trades = result.runs["hrm"][symbol].trades
        long, short = trades[trades["shares"] > 0], trades[trades["shares"] < 0]
        ax.scatter(long["entry_time"], long["entry_price"], marker="^", color="tab:green", label="long entry")
        ax.scatter(
            short["entry_time"], short["entry_price"], marker="v", color="tab:red", label="short entry"
        )
        ax.scatter(trades["exit_time"], trades["exit_price"], marker="x", color="k", label="exit")
        ax.set(title=f"{symbol}: HRM entries and exits", ylabel="price")
        ax.legend(fontsize=8)
    return figure


def _segments_figure(result: BacktestResult) -> Figure:
    segments = np.concatenate([run.segments.to_numpy() for run in result.runs["hrm"].values()])
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    edges = np.arange(0.5, segments.max() + 1.5)
    ax.hist(segments, bins=edges, rwidth=0.8)
    ax.set(
        title=f"ACT segments per decision (mean {segments.mean():.2f})", xlabel="segments", ylabel="decisions"
    )
    return figure


def _regimes_figure(result: BacktestResult) -> Figure:
    symbols = list(result.close)
    figure = Figure(figsize=(10, 2.5 * len(symbols)), layout="constrained")
    for ax, symbol in zip(np.atleast_1d(figure.subplots(len(symbols), 1)), symbols, strict=True):
        regimes = result.runs["hrm"][symbol].regimes
        ax.stackplot(regimes.index, regimes.to_numpy().T, labels=regimes.columns, alpha=0.8)
        ax.set(title=f"{symbol}: HRM regime probabilities", ylim=(0, 1))
        ax.legend(fontsize=8, loc="upper left")
    return figure


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those become null."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _summary_json(result: BacktestResult, summary: pd.DataFrame) -> dict[str, Any]:
    per_symbol = {
        strategy: {
            symbol: {
                k: _finite(v)
                for k, v in performance_summary(
                    run.returns.to_numpy(), periods_per_year=result.periods_per_year
                ).items()
            }
            for symbol, run in runs.items()
        }
        for strategy, runs in result.runs.items()
    }
    first = min(r.returns.index[0] for r in result.runs["hrm"].values())
    last = max(r.returns.index[-1] for r in result.runs["hrm"].values())
    return {
        "out_of_sample": {"start": str(first), "end": str(last)},
        "symbols": list(result.close),
        "periods_per_year": result.periods_per_year,
        "portfolio": {s: {k: _finite(v) for k, v in row.items()} for s, row in summary.iterrows()},
        "per_symbol": per_symbol,
    }


def _html(title: str, result: BacktestResult, summary: pd.DataFrame, paths: dict[str, Path]) -> str:
    table = metrics_table(summary).to_html(border=0)
    images = "\n".join(
        f'<h2>{html.escape(name.replace("_", " "))}</h2><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(paths[name].read_bytes()).decode()}">'
        for name in FIGURES
    )
    symbols = html.escape(", ".join(result.close))
    period = html.escape(result.period())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}
table{{border-collapse:collapse}}td,th{{padding:4px 8px;text-align:right;border-bottom:1px solid #ddd}}
img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Symbols: {symbols}; {period}. Every figure is out of sample (bars no model here was trained or
validated on) and net of commission,
slippage and borrow; portfolios are equal-weight across symbols. Sharpe, Sortino and CAGR are
annualised with {result.periods_per_year:g} periods per year; PSR is P[Sharpe &gt; 0]; DSR deflates
it for every strategy compared here; costs are a share of starting capital.</p>
{table}
{images}
</body></html>
"""
