"""Paper trading: a registered version trading an account bar by bar, through the backtest's engine.

A paper account is its own DuckDB warehouse (``HRM_HOME/paper/<account>/warehouse.duckdb``): the
usual ``raw``/``clean``/``quarantine`` bars and ``features``, and the ledger (``LEDGER_DDL``). It
never writes the training warehouse, so a paper tick and a training run never wait for each
other's lock, and nothing the paper account sees changes what a model is trained on.

``seed`` ingests the history before the first traded bar. Each ``tick`` then takes the bars of one
time stamp, and in one transaction: appends them to ``raw.ohlcv``; validates them (clean or
quarantined, nothing lost); updates the features incrementally (``update_features``); for each
symbol with a clean bar, runs the engine's bar (``engine.decisions.run_bar``: the order decided at
the previous close fills at this open, stops and targets intrabar, borrow); decides with the
version, reading the last bars only (``latest.py``) and the exposure the account holds; and turns
the decision into the order that fills at the next open (``engine.decisions.decide``). Each
symbol's account is the engine's ``ACCOUNT_DT`` record, stored whole every bar, so a tick resumes
exactly where the last committed one stopped: a tick is atomic (killed anywhere, it left nothing)
and idempotent (``new_bars`` offers only bars later than each symbol's last in ``raw.ohlcv``, and a
bar traded twice is refused whole). Symbols trade independent accounts of ``initial_capital``
each, as the backtest runs them; a symbol that joins a running account gets its past as history
(``joining_history``).

The exposure held that a decision reads is the previous decision's, or none once the account is
flat (a stop or target closed it), as ``HRMTradingEnv`` keeps it; so a replayed period's fills,
positions and equity equal the backtest's on the same bars (``sim.backtest.run_version``).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from hrm_core.core.config import HRMConfig, TradingConfig, ValidationConfig
from hrm_core.core.vocabulary import ACTIONS, EXIT_REASONS, EXIT_STOP, EXIT_TARGET, PARTS
from hrm_core.data.validation import ValidationReport, validate_ohlcv
from hrm_core.data.warehouse import TABLE_DDL, ensure_tables, to_utc_naive, transaction
from hrm_core.dataset.market import read_latest_bars
from hrm_core.engine.decisions import (
    ACCOUNT_DT,
    MAX_CLOSED_PER_BAR,
    TRADE_DT,
    account_params,
    exit_levels,
    fill,
    new_accounts,
    run_bar,
    run_decisions,
)
from hrm_core.engine.decisions import decide as engine_decide
from hrm_core.features.build import update_features
from hrm_core.model.exposure import benchmark_exposure
from hrm_core.model.serving import LoadedVersion
from hrm_core.sim.backtest import run_version, target_decisions
from hrm_core.sim.metrics import performance_summary
from hrm_core.workflows.latest import decide, latest_bars

ORDER_TYPE = "market_on_open"
"""Every order fills at the next bar's open, as the engine fills it."""
BUY, SELL = "BUY", "SELL"

ACCOUNT_COLUMNS = ", ".join(
    f"{name} {'BIGINT' if ACCOUNT_DT[name].kind == 'i' else 'DOUBLE'}" for name in ACCOUNT_DT.names
)
LEDGER_DDL = {
    "paper.settings": "key VARCHAR, value VARCHAR",
    # One row per symbol and bar: the engine's account after the bar and the decision at its close
    # (``pending``: the order for the next open), its equity, and the exposure the decision chose.
    "paper.positions": "symbol VARCHAR, ts TIMESTAMP, bar BIGINT, close DOUBLE, equity DOUBLE, "
    f"held DOUBLE, version VARCHAR, {ACCOUNT_COLUMNS}",
    # One row per symbol and decided bar, HOLDs included: which version decided what.
    "paper.orders": "symbol VARCHAR, ts TIMESTAMP, model VARCHAR, version VARCHAR, action VARCHAR, "
    "side VARCHAR, shares DOUBLE, order_type VARCHAR, position DOUBLE, held DOUBLE, "
    "target_exposure DOUBLE, tilt DOUBLE, benchmark DOUBLE, close DOUBLE, equity DOUBLE",
    "paper.fills": "symbol VARCHAR, ts TIMESTAMP, side VARCHAR, shares DOUBLE, price DOUBLE, "
    "fee DOUBLE, reason VARCHAR",
    "paper.trades": "symbol VARCHAR, entry_ts TIMESTAMP, exit_ts TIMESTAMP, shares DOUBLE, "
    "entry_price DOUBLE, exit_price DOUBLE, fees DOUBLE, exit VARCHAR, pnl DOUBLE",
}
LEDGER_KEYS = {"paper.settings": "key", "paper.positions": "symbol, ts", "paper.orders": "symbol, ts"}
"""A bar is traded once: a second write of it fails the tick instead of doubling the ledger."""
LEDGER_TABLES = tuple(LEDGER_DDL)


@dataclass(frozen=True)
class Tick:
    """What one tick did."""

    ts: pd.Timestamp
    version: str
    bars: int  # bars received
    quarantined: int
    traded: list[str]  # symbols whose account stepped
    orders: pd.DataFrame  # this tick's orders, HOLDs included


def open_ledger(con: duckdb.DuckDBPyConnection) -> None:
    """Create the paper warehouse's tables if they do not exist."""
    ensure_tables(con)
    con.execute("CREATE SCHEMA IF NOT EXISTS paper")
    for table, columns in LEDGER_DDL.items():
        key = f", PRIMARY KEY ({LEDGER_KEYS[table]})" if table in LEDGER_KEYS else ""
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns}{key})")


def settings(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """What the account was started with (``start``, ``source``, ``initial_capital``)."""
    return dict(con.execute("SELECT key, value FROM paper.settings").fetchall())


def seed(
    con: duckdb.DuckDBPyConnection,
    history: pd.DataFrame,
    validation: ValidationConfig,
    start: pd.Timestamp,
    source: str,
    initial_capital: float,
) -> ValidationReport:
    """Start the account: ingest ``history`` (the bars before ``start``, not traded) and record how
    the account was started, in one transaction."""
    with transaction(con):
        report = add_history(con, history, validation)
        con.executemany(
            "INSERT INTO paper.settings VALUES (?, ?)",
            [["start", str(start)], ["source", source], ["initial_capital", repr(float(initial_capital))]],
        )
    return report


def add_history(
    con: duckdb.DuckDBPyConnection, bars: pd.DataFrame, validation: ValidationConfig
) -> ValidationReport:
    """Ingest ``bars`` without trading them, in one transaction: a new account's past, or the
    past of a symbol that joins a running account."""
    with transaction(con):
        report = _ingest(con, bars, validation)
        update_features(con)
    return report


def joining_history(con: duckdb.DuckDBPyConnection, fresh: pd.DataFrame) -> pd.DataFrame:
    """Of ``new_bars``, those of symbols the account has never seen dated at or before its latest
    traded bar: their past, to ingest as history (trading them would place orders in the past)."""
    known = {s for (s,) in con.execute("SELECT DISTINCT symbol FROM raw.ohlcv").fetchall()}
    (latest,) = con.execute("SELECT max(ts) FROM paper.positions").fetchone()
    cutoff = pd.Timestamp(latest) if latest is not None else pd.Timestamp(settings(con)["start"])
    inclusive = latest is not None
    late = fresh["ts"] <= cutoff if inclusive else fresh["ts"] < cutoff
    return fresh[~fresh["symbol"].isin(known) & late]


def new_bars(con: duckdb.DuckDBPyConnection, bars: pd.DataFrame) -> pd.DataFrame:
    """The bars of ``bars`` later than each symbol's last bar in ``raw.ohlcv`` (all of a new
    symbol's), in time order: what the next ticks trade."""
    last = dict(con.execute("SELECT symbol, max(ts) FROM raw.ohlcv GROUP BY symbol").fetchall())
    bars = to_utc_naive(bars)
    newest = bars["symbol"].map(last)
    fresh = bars[newest.isna() | (bars["ts"] > newest)]
    return fresh.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def tick(
    con: duckdb.DuckDBPyConnection, bars: pd.DataFrame, loaded: LoadedVersion, validation: ValidationConfig
) -> Tick:
    """Trade the bars of one time stamp (at most one per symbol, all later than the account's last
    bar of that symbol), in one transaction."""
    bars = to_utc_naive(bars)
    ts = pd.Timestamp(bars["ts"].iloc[0])
    if (bars["ts"] != ts).any():
        raise ValueError(
            f"paper tick: bars of several time stamps ({bars['ts'].min()} .. {bars['ts'].max()})"
        )
    trading = loaded.config.trading
    params = account_params(trading)
    initial = float(settings(con).get("initial_capital", trading.initial_capital))
    with transaction(con):
        report = _ingest(con, bars, validation)
        update_features(con)
        clean = to_utc_naive(report.clean).set_index("symbol")
        traded = sorted(clean.index)
        states = latest_states(con, traded)
        stale = [s for s in traded if s in states and pd.Timestamp(states[s]["ts"]) >= ts]
        if stale:
            raise ValueError(f"paper tick: {stale[0]} already traded a bar at or after {ts}")
        fills, trades, held = [], [], {}
        for symbol in traded:
            bar = clean.loc[symbol]
            previous = states.get(symbol)
            account = new_accounts(1, initial)[0] if previous is None else account_of(previous)
            n = 0 if previous is None else int(previous["bar"]) + 1
            held[symbol] = 0.0 if previous is None else float(previous["held"])
            before = account.copy()
            closing = np.zeros(MAX_CLOSED_PER_BAR, dtype=TRADE_DT)
            closed = run_bar(
                account, params, n, bar["open"], bar["high"], bar["low"], bar["close"], closing, 0
            )
            fills += _fills(symbol, ts, before, closing[:closed], bar["open"], params)
            trades += [_trade_row(con, symbol, ts, trade) for trade in closing[:closed]]
            if account["shares"] == 0.0:  # flat (a stop, a target, or a decision to be): nothing held
                held[symbol] = 0.0
            states[symbol] = {"account": account, "bar": n}
        orders = _decide(con, loaded, traded, states, held, ts, trading)
        _write(con, "paper.fills", pd.DataFrame(fills, columns=_columns("paper.fills")))
        _write(con, "paper.trades", pd.DataFrame(trades, columns=_columns("paper.trades")))
        _write(con, "paper.orders", orders)
        positions = []
        for symbol in traded:
            account, n = states[symbol]["account"], states[symbol]["bar"]
            close = float(clean.loc[symbol, "close"])
            decided = orders.loc[orders["symbol"] == symbol, "position"]
            holding = float(decided.iloc[0]) if len(decided) else held[symbol]
            positions.append(
                [symbol, ts, n, close, account["cash"] + account["shares"] * close, holding, loaded.version]
                + [account[name].item() for name in ACCOUNT_DT.names]
            )
        _write(con, "paper.positions", pd.DataFrame(positions, columns=_columns("paper.positions")))
    return Tick(
        ts=ts,
        version=loaded.version,
        bars=len(bars),
        quarantined=len(report.quarantine),
        traded=traded,
        orders=orders,
    )


def _decide(con, loaded, traded, states, held, ts, trading) -> pd.DataFrame:
    """Each traded symbol's decision at this close, for the exposure it holds, placed with the
    engine as the order for the next open."""
    rows = []
    if not traded:
        return pd.DataFrame(rows, columns=_columns("paper.orders"))
    latest = latest_bars(con, loaded, traded)
    at = latest.index(traded)
    ready = [s for s, i in zip(traded, at, strict=True) if latest.ready[i] and latest.ts[i] == ts]
    if not ready:
        return pd.DataFrame(rows, columns=_columns("paper.orders"))
    index = latest.index(ready)
    columns = decide(loaded, latest, index, np.array([held[s] for s in ready]))
    names = loaded.meta["output_columns"]
    for symbol, i, row in zip(ready, index, columns, strict=True):
        out = dict(zip(names, row.tolist(), strict=True))
        account = states[symbol]["account"]
        equity = float(account["cash"] + account["shares"] * latest.close[i])
        action = int(out["action"])
        shares = place_order(account, trading, latest.close[i], latest.atr[i], action, out["position"])
        side = side_of(shares)
        rows.append(
            [
                *(symbol, ts, loaded.name, loaded.version, ACTIONS[action], side, abs(shares), ORDER_TYPE),
                *(out["position"], held[symbol], out["target_exposure"], out["tilt"]),
                *(float(latest.benchmark[i]), float(latest.close[i]), equity),
            ]
        )
    return pd.DataFrame(rows, columns=_columns("paper.orders"))


def place_order(
    account: np.void, trading: TradingConfig, close: float, atr: float, action: int, position: float
) -> float:
    """A decision at this close placed with the engine (``decide``, sized from equity here, with the
    configured exit levels) as the order for the next open; returns its shares (+ buy, − sell)."""
    stop_atr, target_atr = exit_levels(trading)
    engine_decide(account, account_params(trading), close, atr, action, abs(position), stop_atr, target_atr)
    return float(account["pending"])


def side_of(shares: float) -> str | None:
    return BUY if shares > 0 else SELL if shares < 0 else None


def _fills(symbol, ts, before, closed, open_, params) -> list[list]:
    """The fills of one bar: the pending order at the open, and a stop or target intrabar (the
    last trade ``closed``, when it exited on one)."""
    fills = []
    pending = float(before["pending"])
    if pending != 0.0:
        price, fee, _ = fill(pending, open_, 0.0, params["fees"], params["fixed_fees"], params["slippage"])
        fills.append([symbol, ts, BUY if pending > 0 else SELL, abs(pending), price, fee, "signal"])
    if len(closed) and closed[-1]["exit"] in (EXIT_STOP, EXIT_TARGET):  # intrabar, after the open's fill
        shares = float(before["shares"]) + pending
        price = float(closed[-1]["exit_price"])
        fee = abs(shares) * price * params["fees"] + params["fixed_fees"]
        reason = EXIT_REASONS[closed[-1]["exit"]]
        fills.append([symbol, ts, SELL if shares > 0 else BUY, abs(shares), price, fee, reason])
    return fills


def _trade_row(con, symbol, ts, trade) -> list:
    entry_ts = con.execute(
        "SELECT ts FROM paper.positions WHERE symbol = ? AND bar = ?", [symbol, int(trade["entry_bar"])]
    ).fetchone()
    return [
        symbol,
        ts if entry_ts is None else entry_ts[0],
        ts,
        float(trade["shares"]),
        float(trade["entry_price"]),
        float(trade["exit_price"]),
        float(trade["fees"]),
        EXIT_REASONS[int(trade["exit"])],
        float(trade["pnl"]),
    ]


def _ingest(
    con: duckdb.DuckDBPyConnection, bars: pd.DataFrame, validation: ValidationConfig
) -> ValidationReport:
    """Append ``bars`` to ``raw.ohlcv`` and their validated rows to ``clean`` and ``quarantine``
    (inside the caller's transaction)."""
    report = validate_ohlcv(bars, validation)
    for table, frame in (
        ("raw.ohlcv", bars),
        ("clean.ohlcv", report.clean),
        ("quarantine.ohlcv", report.quarantine),
    ):
        _write(con, table, to_utc_naive(frame))
    return report


def _columns(table: str) -> list[str]:
    return [part.split()[0] for part in (LEDGER_DDL.get(table) or TABLE_DDL[table]).split(", ")]


def _write(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    if not frame.empty:
        con.from_df(frame[_columns(table)]).insert_into(table)


def latest_states(con: duckdb.DuckDBPyConnection, symbols: list[str] | None = None) -> dict[str, dict]:
    """Each symbol's (of ``symbols``, or every one's) latest ``paper.positions`` row."""
    where = "" if symbols is None else "WHERE symbol IN (SELECT unnest(?::VARCHAR[])) "
    frame = con.execute(
        f"SELECT * FROM paper.positions {where}"
        "QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) = 1",
        [] if symbols is None else [symbols],
    ).df()
    return {row["symbol"]: row for row in frame.to_dict("records")}


def account_of(row: dict) -> np.void:
    """The engine's ``ACCOUNT_DT`` record stored in a ``paper.positions`` row."""
    account = np.zeros(1, dtype=ACCOUNT_DT)
    for name in ACCOUNT_DT.names:
        account[name] = row[name]
    return account[0]


def ledger(con: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    """Every ledger table, in a stable order (for reports and for comparing two ledgers)."""
    order = {
        "paper.positions": "symbol, ts",
        "paper.orders": "symbol, ts",
        "paper.fills": "symbol, ts, reason",
        "paper.trades": "symbol, exit_ts",
        "paper.settings": "key",
    }
    return {
        table: con.execute(f"SELECT * FROM {table} ORDER BY {order[table]}").df() for table in LEDGER_TABLES
    }


def equity_curve(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per bar: each symbol's account equity and the portfolio's (their sum), as columns. A
    symbol's account holds its initial capital in cash until its first bar (a symbol that joins
    later, or whose first bar was quarantined, adds no jump), and its last equity over a gap."""
    frame = con.execute("SELECT ts, symbol, equity FROM paper.positions ORDER BY ts").df()
    curve = frame.pivot(index="ts", columns="symbol", values="equity").ffill().fillna(_capital(con))
    return curve.assign(portfolio=curve.sum(axis=1))


def _capital(con: duckdb.DuckDBPyConnection) -> float:
    return float(settings(con)["initial_capital"])


def performance(con: duckdb.DuckDBPyConnection, config: HRMConfig) -> dict[str, dict[str, float]]:
    """The account's record (every symbol's account together, from the first traded bar) beside
    the benchmark's on the same bars through the same engine and costs: both out of sample (the
    bars came after the account started) and net of costs. Turnover is the mean absolute change of
    exposure per bar (from flat at the first), averaged over symbols; costs are fees, slippage and
    borrow as a fraction of the capital of all symbols' accounts. The portfolio is the sum of the
    symbols' accounts (weights drift with their equity; the backtest averages their returns)."""
    curve = equity_curve(con)
    if len(curve) < 2:
        return {}
    ppy = config.trading.periods_per_year
    account = curve["portfolio"].pct_change().iloc[1:].to_numpy()
    benchmark = benchmark_equity(con, config, curve.index[0]).sum(axis=1)
    summary = {
        "paper": performance_summary(account, periods_per_year=ppy),
        "benchmark": performance_summary(benchmark.pct_change().iloc[1:].to_numpy(), periods_per_year=ppy),
    }
    held = exposures(con).fillna(0.0)  # flat before a symbol's first bar and over a gap
    changes = held.diff().fillna(held.iloc[:1])  # the first bar's change is from flat
    summary["paper"]["turnover"] = float(changes.abs().mean().mean())
    costs = con.execute(
        "SELECT sum(costs) FROM (SELECT costs FROM paper.positions "
        "QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) = 1)"
    ).fetchone()[0]
    summary["paper"]["costs"] = float(costs) / (held.shape[1] * _capital(con))
    return summary


def exposures(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per bar and symbol, the exposure held at the close (shares × close / equity)."""
    frame = con.execute(
        "SELECT ts, symbol, shares * close / equity AS exposure FROM paper.positions ORDER BY ts"
    ).df()
    return frame.pivot(index="ts", columns="symbol", values="exposure")


def version_backtest(con: duckdb.DuckDBPyConnection, loaded: LoadedVersion, start: pd.Timestamp) -> pd.Series:
    """The portfolio equity of ``loaded``'s backtest (``sim.backtest.run_version``) on the account's
    own bars from ``start``: what the account would show had this version decided every bar."""
    config = loaded.config
    normalization = {name: tuple(stats) for name, stats in loaded.meta["normalization"].items()}
    data = read_latest_bars(con, config, normalization, bars=2**62)
    data = data.with_part(np.where(data.ts >= np.datetime64(start), PARTS.index("test"), -1))
    curves = {}
    for symbol in data.symbols:
        try:
            run = run_version(loaded.model, data, config, symbol, "test")
        except ValueError:  # fewer than 2 decision bars yet
            continue
        curves[symbol] = (1 + run.returns).cumprod() * config.trading.initial_capital
    if not curves:
        return pd.Series(dtype=float)
    return pd.DataFrame(curves).ffill().fillna(config.trading.initial_capital).sum(axis=1)


def benchmark_equity(con: duckdb.DuckDBPyConnection, config: HRMConfig, start: pd.Timestamp) -> pd.DataFrame:
    """Per symbol, the equity of the policy's benchmark (``policy.benchmark``) trading the paper
    account's clean bars from ``start``, through the no-trade band and the engine, as the backtest
    trades it beside the model."""
    bars = con.execute(
        "SELECT c.symbol, c.ts, c.open, c.high, c.low, c.close, f.h_atr_20 AS atr FROM clean.ohlcv AS c "
        "LEFT JOIN features.hierarchical AS f USING (symbol, ts) ORDER BY c.symbol, c.ts"
    ).df()
    trading, limit = config.trading, config.trading.max_position_size
    curves = {}
    for symbol, frame in bars.groupby("symbol"):
        exposure = benchmark_exposure(
            frame["close"].to_numpy(), np.zeros(len(frame), int), config.policy, trading
        )
        traded = (frame["ts"] >= start).to_numpy()
        decisions = target_decisions(np.clip(exposure[traded], -limit, limit), trading.no_trade_band)
        run = run_decisions(frame[traded].fillna({"atr": 0.0}).reset_index(drop=True), decisions, trading)
        curves[symbol] = pd.Series(run.equity.to_numpy(), index=frame.loc[traded, "ts"].to_numpy())
    return pd.DataFrame(curves).ffill().fillna(trading.initial_capital)
