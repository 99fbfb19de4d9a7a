"""``hrm-trading paper`` and ``hrm-trading orders``: a paper account trading the version an alias
holds, bar by bar (``hrm_core/workflows/paper.py``), and the orders it will place at the next open.

Sources: ``replay`` feeds recorded bars one time stamp at a time, from ``--path`` (a CSV or
parquet file or folder) or, without one, from the training warehouse's clean bars, starting a year
before the last bar unless ``--start`` says otherwise; ``csv``/``parquet``/``s3``/``yfinance`` read
the configured source each time and trade the bars it has that the account has not seen (all of
its bars before ``--start`` are history; without ``--start`` a new account trades only the bars
that arrive after it was started). ``--follow`` keeps polling the source.

The alias is read again before every tick: when it moves, the next bar is decided by the new
version and the ledger's ``version`` column says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from assets.resources import HRMSettings, MlflowResource
from assets.serving import load_version
from hrm_core.core.config import DataConfig, hrm_home
from hrm_core.core.errors import HRMError
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.data.sources import make_source
from hrm_core.data.warehouse import read_bars
from hrm_core.model.serving import LoadedVersion
from hrm_core.workflows import paper
from hrm_core.workflows.latest import decide, latest_bars

PAPER_DIR = "paper"
LOCK_WAIT = 60.0
"""Seconds a paper run waits for readers of the account (``serve``, ``orders``) to let go."""
REPLAY_YEARS = 1
log = logging.getLogger("hrm_trading.paper")
SOURCES = ("replay", "csv", "parquet", "s3", "yfinance")


def account_database(account: str) -> Path:
    """Where a paper account's warehouse lives: ``HRM_HOME/paper/<account>/warehouse.duckdb``."""
    if not account.replace("-", "").replace("_", "").isalnum():
        raise HRMError(f"paper account {account!r}: use letters, digits, '-' and '_' only, e.g. main")
    return hrm_home() / PAPER_DIR / account / "warehouse.duckdb"


def open_account(account: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """The account's warehouse, with its ledger tables."""
    path = account_database(account)
    if read_only:
        if not path.exists():
            raise HRMError(f"no paper account {account!r} yet: start one with `hrm-trading paper`")
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException:  # another process (serve, orders) is reading it: DuckDB's lock
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    paper.open_ledger(con)
    return con


@dataclass(frozen=True)
class PaperSource:
    """Where the bars come from and when a new account's trading starts."""

    kind: str
    load: Callable[[], pd.DataFrame]
    default_start: Callable[[pd.DataFrame], pd.Timestamp]


def default_source(settings: HRMSettings) -> str:
    """The configured source, or a replay of the warehouse when that is the (static) sample."""
    configured = settings.config().data.source
    return "replay" if configured == "sample" else configured


def paper_source(
    kind: str, settings: HRMSettings, warehouse, path: str | None, s3_client=None
) -> PaperSource:
    """The bars a paper account reads (``SOURCES``)."""
    if kind not in SOURCES:
        raise HRMError(f"paper: unknown source {kind!r}; use one of {', '.join(SOURCES)}")
    config = settings.config()
    last_year = _years_before_last(REPLAY_YEARS)
    if kind == "replay" and path:
        fmt = "parquet" if Path(path).suffix in (".parquet", ".pq") else "csv"
        return PaperSource(f"replay:{path}", make_source(DataConfig(source=fmt, path=path)).load, last_year)
    if kind == "replay":
        symbols = config.data.symbols
        return PaperSource("replay:warehouse", lambda: _warehouse_bars(warehouse, symbols), last_year)
    data = config.data.model_copy(update={"source": kind, **({"path": path} if path else {})})
    data = DataConfig.model_validate(data.model_dump())  # a file source without a path is refused here
    return PaperSource(kind, make_source(data, s3_client).load, _after_last)


def _years_before_last(years: int) -> Callable[[pd.DataFrame], pd.Timestamp]:
    def start(bars: pd.DataFrame) -> pd.Timestamp:
        return _naive(bars["ts"].max()) - pd.DateOffset(years=years)

    return start


def _after_last(bars: pd.DataFrame) -> pd.Timestamp:
    return _naive(bars["ts"].max()) + pd.Timedelta(microseconds=1)


def _naive(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts


def _warehouse_bars(warehouse, symbols: list[str] | None) -> pd.DataFrame:
    """The training warehouse's clean bars, as a source reads them (with their lineage)."""
    with warehouse.get_connection() as con:
        if symbols is None:
            symbols = [s for (s,) in con.execute("SELECT DISTINCT symbol FROM clean.ohlcv").fetchall()]
        bars = read_bars(con, "clean.ohlcv", symbols)
    if bars.empty:
        raise HRMError("paper --source replay: the warehouse has no bars; run `make run` first")
    return bars.assign(source_file="warehouse:clean.ohlcv", source_row=np.arange(len(bars)))


@dataclass
class PaperRun:
    """What one ``paper`` command did."""

    account: str
    ticks: list[paper.Tick]
    started: bool  # this command started the account
    start: str


def run_paper(
    tracking: MlflowResource,
    settings: HRMSettings,
    source: PaperSource,
    alias: str,
    account: str = "main",
    start: str | None = None,
    max_ticks: int | None = None,
    on_tick: Callable[[paper.Tick], None] | None = None,
) -> PaperRun:
    """Trade every new bar of ``source`` (at most ``max_ticks`` time stamps) on the account."""
    validation = settings.config().validation
    bars = source.load()
    loaded = _Following(tracking, alias)
    with open_account(account) as con:
        started = not paper.settings(con)
        if started:
            first = _naive(start if start else source.default_start(bars))
            history = bars[pd.to_datetime(bars["ts"], utc=True).dt.tz_localize(None) < first]
            capital = loaded.version().config.trading.initial_capital
            paper.seed(con, history, validation, first, source.kind, capital)
        todo = paper.new_bars(con, bars)
        joining = paper.joining_history(con, todo)
        if len(joining):
            paper.add_history(con, joining, validation)
            todo = paper.new_bars(con, bars)
        ticks = []
        for _, group in todo.groupby("ts", sort=True):
            if max_ticks is not None and len(ticks) >= max_ticks:
                break
            done = paper.tick(con, group, loaded.version(), validation)
            ticks.append(done)
            if on_tick is not None:
                on_tick(done)
        begun = paper.settings(con)["start"]
    return PaperRun(account, ticks, started, begun)


class _Following:
    """The version ``alias`` holds, read again at every call (loaded only when it moved)."""

    def __init__(self, tracking: MlflowResource, alias: str) -> None:
        self.tracking, self.alias = tracking, alias
        self.loaded: LoadedVersion | None = None

    def version(self) -> LoadedVersion:
        found = self.tracking.version_with_alias(self.alias)
        if self.loaded is None or found is None or str(found.version) != self.loaded.version:
            self.loaded = load_version(self.tracking, self.alias)  # a clear error when none holds it
        return self.loaded


def follow(run: Callable[[], PaperRun], every: float) -> None:
    """Run ``run`` every ``every`` seconds until interrupted (Ctrl-C). A failed round (the source
    or the registry unreachable, say) is reported and the next round tries again; the account's
    warehouse is open only while a round trades."""
    while True:
        try:
            run()
        except Exception as error:
            log.warning(
                "paper: this round failed (%s: %s); trying again in %g s", type(error).__name__, error, every
            )
        time.sleep(every)


def next_orders(tracking: MlflowResource, account: str, alias: str | None) -> list[dict]:
    """The orders the account places at the next open: from its ledger, or, when ``alias`` holds
    another version than the one that decided, that version's decision on the same bar from the
    same account (nothing is written)."""
    with open_account(account, read_only=True) as con:
        states = paper.latest_states(con)
        if not states:
            raise HRMError(f"paper account {account!r} has traded no bar yet: run `hrm-trading paper`")
        latest = pd.DataFrame({"symbol": list(states), "ts": [state["ts"] for state in states.values()]})
        decided = con.execute("SELECT * FROM paper.orders").df().merge(latest, on=["symbol", "ts"])
        loaded = load_version(tracking, alias) if alias else None
        if loaded is not None and set(decided["version"]) != {loaded.version}:
            return _orders_of(loaded, con, states, decided)
    return [_order(row) for row in decided.to_dict("records") if row["side"] is not None]


def _orders_of(loaded: LoadedVersion, con, states: dict[str, dict], decided: pd.DataFrame) -> list[dict]:
    symbols = sorted(decided["symbol"])
    latest = latest_bars(con, loaded, symbols)
    at = latest.index(symbols)
    held = decided.set_index("symbol").loc[symbols, "held"].to_numpy()
    names, trading = loaded.meta["output_columns"], loaded.config.trading
    orders = []
    for symbol, row, i in zip(symbols, decide(loaded, latest, at, held), at, strict=True):
        out = dict(zip(names, row.tolist(), strict=True))
        account = paper.account_of(states[symbol])
        account["pending"] = 0.0  # as it was before the ledger's decision
        action = int(out["action"])
        shares = paper.place_order(account, trading, latest.close[i], latest.atr[i], action, out["position"])
        if shares != 0.0:
            order = {"symbol": symbol, "side": paper.side_of(shares), "shares": abs(shares)}
            order |= {"order_type": paper.ORDER_TYPE, "ts": states[symbol]["ts"], "action": ACTIONS[action]}
            order |= {"position": out["position"], "model": loaded.name, "version": loaded.version}
            orders.append(_order(order))
    return orders


def _order(row: dict) -> dict:
    return {
        "symbol": row["symbol"],
        "side": row["side"],
        "quantity": float(row["shares"]),
        "order_type": row["order_type"],
        "decided_at": str(pd.Timestamp(row["ts"]))[:19],
        "action": row["action"],
        "target_exposure": float(row["position"]),
        "model": row["model"],
        "version": str(row["version"]),
    }
