"""Paper trading: a replayed period equals the backtest of the same version on the same bars; a
tick is idempotent and survives ``kill -9`` anywhere; the account follows the alias; bad bars are
quarantined, never traded; ``orders`` prints what the account will do at the next open."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from assets.paper_loop import PaperSource, account_database, next_orders, paper_source, run_paper
from assets.serving import load_version
from hrm_core.data.warehouse import read_bars
from hrm_core.dataset.market import read_market_data
from hrm_core.dataset.targets import outcome_targets
from hrm_core.sim.backtest import run_agent, run_version
from hrm_core.workflows import paper
from pipelines.cli import main
from pipelines.server import ServerState, create_app
from tests.test_serving import served  # noqa: F401  (the fixture: a tiny version 1 under production)

pytestmark = pytest.mark.slow
TICKS = 30


def replay(served, account: str, ticks: int | None = TICKS, alias: str = "production"):  # noqa: F811
    r = served["resources"]
    source = paper_source("replay", served["settings"], r["warehouse"], None)
    return run_paper(r["tracking"], served["settings"], source, alias, account, start_of(served), ticks)


def start_of(served) -> str:  # noqa: F811
    """A start that leaves TICKS + 5 bars to replay."""
    with duckdb.connect(served["resources"]["warehouse"].database, read_only=True) as con:
        (ts,) = con.execute(
            "SELECT ts FROM (SELECT DISTINCT ts FROM clean.ohlcv) ORDER BY ts DESC LIMIT 1 OFFSET ?",
            [TICKS + 4],
        ).fetchone()
    return str(ts)


def ledger(account: str) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(account_database(account)), read_only=True) as con:
        return paper.ledger(con)


def test_a_replayed_period_equals_the_backtest_of_the_same_version(served):  # noqa: F811
    run = replay(served, "parity", ticks=None)
    assert run.started and len(run.ticks) == TICKS + 5
    loaded = load_version(served["resources"]["tracking"], "production")
    config = loaded.config
    normalization = {k: tuple(v) for k, v in loaded.meta["normalization"].items()}
    with duckdb.connect(served["resources"]["warehouse"].database, read_only=True) as con:
        data = read_market_data(
            con, config, normalization, f"CASE WHEN f.ts >= TIMESTAMP '{start_of(served)}' THEN 'test' END"
        )
    book = ledger("parity")
    positions = book["paper.positions"].set_index(["symbol", "ts"])
    traded = book["paper.trades"]
    for symbol in data.symbols:
        backtest = run_version(loaded.model, data, config, symbol, "test")
        equity = (1 + backtest.returns).cumprod() * config.trading.initial_capital
        ours = positions.loc[symbol].loc[equity.index]
        assert len(equity) >= TICKS
        np.testing.assert_allclose(ours["equity"].to_numpy(), equity.to_numpy(), rtol=1e-9, atol=0)
        returns = ours["equity"].pct_change().iloc[1:]
        np.testing.assert_allclose(
            returns.to_numpy(), backtest.returns.iloc[1:].to_numpy(), rtol=0, atol=1e-9
        )
        np.testing.assert_allclose(
            ours["shares"].to_numpy(), backtest.positions.iloc[1:].to_numpy(), atol=1e-9
        )
        closed = backtest.trades[backtest.trades["exit"] != "end"]
        mine = traded[traded["symbol"] == symbol]
        assert len(mine) == len(closed)
        np.testing.assert_allclose(mine["pnl"].to_numpy(), closed["pnl"].to_numpy(), atol=1e-9)
        assert (ours["shares"] != 0).any()  # the version traded, so the comparison says something
    fills = book["paper.fills"]
    assert set(fills["reason"]) <= {"signal", "stop", "target"} and len(fills) > 0
    orders = book["paper.orders"]
    assert set(orders["version"]) == {"1"} and len(orders) == 2 * (TICKS + 5)


def test_a_tick_is_idempotent(served):  # noqa: F811
    replay(served, "twice", ticks=3)
    before = ledger("twice")
    again = replay(served, "twice", ticks=0)
    assert again.ticks == [] and not again.started
    r = served["resources"]
    loaded = load_version(r["tracking"], "production")
    with duckdb.connect(str(account_database("twice"))) as con:
        last = con.execute("SELECT max(ts) FROM paper.positions").fetchone()[0]
        bars = read_bars(con, "clean.ohlcv", ["SP500"])
        bar = bars[bars["ts"] == pd.Timestamp(last, tz="UTC")].assign(source_file="again", source_row=0)
        with pytest.raises(ValueError, match="already traded a bar"):  # the same bar twice: refused whole
            paper.tick(con, bar, loaded, served["config"].validation)
    after = ledger("twice")
    for table in before:
        pd.testing.assert_frame_equal(before[table], after[table])
    assert len(after["paper.positions"]) == 2 * 3


def paper_command(served, account: str, ticks: int) -> subprocess.Popen:  # noqa: F811
    env = {**os.environ, "HRM_HOME": str(served["home"]), "HRM_THREADS": "1"}
    command = ["paper", "--account", account, "--start", start_of(served), "--ticks", str(ticks)]
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_kill_9_anywhere_then_a_rerun_gives_the_uninterrupted_ledger(served):  # noqa: F811
    replay(served, "uninterrupted", ticks=12)
    done = 0
    for after_lines, delay in ((0, 6.0), (2, 0.15), (3, 0.3)):  # starting up or seeding, then in ticks
        process = paper_command(served, "killed", 12 - done)
        for _ in range(after_lines):
            process.stdout.readline()
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if account_database("killed").exists():
            with duckdb.connect(str(account_database("killed")), read_only=True) as con:
                done = con.execute("SELECT count(DISTINCT ts) FROM paper.positions").fetchone()[0]
    finish = paper_command(served, "killed", 12 - done)
    out, _ = finish.communicate(timeout=600)
    assert finish.returncode == 0, out
    killed, whole = ledger("killed"), ledger("uninterrupted")
    for table in whole:
        if table == "paper.settings":
            continue
        pd.testing.assert_frame_equal(killed[table], whole[table])
    assert len(whole["paper.positions"]) == 2 * 12


def test_the_account_follows_the_alias_and_orders_name_the_version(served, capsys):  # noqa: F811
    replay(served, "switch", ticks=3)
    tracking = served["resources"]["tracking"]
    version = served["register"](seed=3)
    tracking.client().set_registered_model_alias(tracking.model_name, "production", version)
    try:
        replay(served, "switch", ticks=3)
        orders = ledger("switch")["paper.orders"].sort_values(["ts", "symbol"])
        assert list(orders["version"]) == ["1"] * 6 + [version] * 6
        assert main(["orders", "--account", "switch", "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert all(o["version"] == version and o["order_type"] == "market_on_open" for o in printed)
        assert {o["side"] for o in printed} <= {"BUY", "SELL"}
        tracking.client().set_registered_model_alias(tracking.model_name, "staging", "1")
        other = next_orders(tracking, "switch", "staging")  # version 1's orders from the same account
        assert all(o["version"] == "1" for o in other)
        from pipelines.status import _paper_lines

        (line,) = [x for x in _paper_lines(served["home"]) if x.startswith("paper account switch:")]
        assert "6 bars" in line and f"decided by version 1, {version}" in line
        assert main(["orders", "--account", "switch"]) == 0
        assert "orders for the next open" in capsys.readouterr().out or not printed
    finally:
        tracking.client().set_registered_model_alias(tracking.model_name, "production", "1")


def test_bad_bars_are_quarantined_and_never_traded(served, tmp_path):  # noqa: F811
    with duckdb.connect(served["resources"]["warehouse"].database, read_only=True) as con:
        bars = read_bars(con, "clean.ohlcv", ["SP500", "NASDAQ"])
    bars = bars.assign(source_file="live.csv", source_row=np.arange(len(bars)))
    last = bars["ts"].max()
    broken = bars["ts"] == last
    bars.loc[broken & (bars["symbol"] == "NASDAQ"), "low"] = bars["high"] * 2  # low above high
    source = PaperSource("csv", lambda: bars, lambda frame: last)
    r = served["resources"]
    run = run_paper(r["tracking"], served["settings"], source, "production", "live")
    (tick,) = run.ticks
    assert tick.bars == 2 and tick.quarantined == 1 and tick.traded == ["SP500"]
    with duckdb.connect(str(account_database("live")), read_only=True) as con:
        counts = [
            con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("raw.ohlcv", "clean.ohlcv", "quarantine.ohlcv")
        ]
        rules = con.execute("SELECT rules FROM quarantine.ohlcv").fetchone()[0]
    assert counts[0] == counts[1] + counts[2] == len(bars) and counts[2] == 1
    assert "low_le_open_close" in rules


def test_the_server_reads_the_paper_account_and_refreshes_when_its_warehouse_changes(served):  # noqa: F811
    from dagster_duckdb import DuckDBResource

    from tests.test_serving import Client, Running

    replay(served, "served", ticks=2)
    database = account_database("served")
    r = served["resources"]
    state = ServerState(r["tracking"], DuckDBResource(database=str(database)), "production", 0.05, database)
    running = Running(create_app(state))
    try:
        client = Client(running.server_port)
        status, rows, _ = client.request("GET", "/decisions/latest")
        orders = ledger("served")["paper.orders"]
        last = orders[orders["ts"] == orders["ts"].max()].set_index("symbol")
        assert status == 200 and {row["held_from"] for row in rows} == {"paper:served"}
        for row in rows:  # at the account's own bar, the server decides what the account decided
            assert pd.Timestamp(row["bar"]) == orders["ts"].max()
            assert row["held"] == pytest.approx(last.loc[row["symbol"], "held"])
            assert row["position"] == pytest.approx(last.loc[row["symbol"], "position"], abs=1e-7)
        replay(served, "served", ticks=1)  # a new bar in the warehouse the server reads
        deadline = time.monotonic() + 30
        while client.request("GET", "/decisions/latest")[1][0]["bar"] == rows[0]["bar"]:
            assert time.monotonic() < deadline, "the server did not see the new bar"
            time.sleep(0.05)
        _, moved, _ = client.request("GET", "/decisions/latest?position=0")
        assert {row["held_from"] for row in moved} == {"request"}
    finally:
        running.close()


def test_the_paper_asset_reports_against_the_backtest_and_can_trigger_retraining(served):  # noqa: F811
    from assets.paper import BEYOND_EXPECTATION, paper_account, paper_within_expectation
    from pipelines.jobs import paper_retrain_sensor

    r = served["resources"]
    resources = {"settings": served["settings"], "warehouse": r["warehouse"], "tracking": r["tracking"]}
    with dg.DagsterInstance.ephemeral() as instance:
        config = {"ops": {"paper_account": {"config": {"account": "dagster", "ticks": 10}}}}
        result = dg.materialize(
            [paper_account, paper_within_expectation],
            resources=resources,
            run_config=config,
            instance=instance,
        )
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        assert metadata["ticks"] == 10 and metadata["versions"] == ["1"]
        assert metadata["equity_curve"].startswith("![paper equity](data:image/png;base64,")
        report = Path(metadata["report"])
        assert (report / "equity.png").stat().st_size > 0
        assert json.loads((report / "summary.json").read_text())["paper"]["sharpe"] == metadata["sharpe"]
        for fact in (
            "rolling_sharpe",
            "drawdown",
            "turnover",
            "sharpe",
            "benchmark_sharpe",
            "live_drifted_share",
        ):
            assert np.isfinite(metadata[fact]), fact
        (check,) = result.get_asset_check_evaluations()
        assert check.passed == (not metadata[BEYOND_EXPECTATION])
        context = dg.build_sensor_context(instance=instance)
        requested = paper_retrain_sensor.evaluate_tick(context)
        assert bool(requested.run_requests) == metadata[BEYOND_EXPECTATION]
        beyond = dg.AssetMaterialization(asset_key=paper_account.key, metadata={BEYOND_EXPECTATION: True})
        instance.report_runless_asset_event(beyond)
        later = dg.build_sensor_context(instance=instance, cursor=requested.cursor)
        (retrain,) = paper_retrain_sensor.evaluate_tick(later).run_requests
        assert retrain.tags["trigger"] == "paper_monitoring"


def test_a_symbol_that_joins_a_running_account_brings_its_past_as_history(served, tmp_path):  # noqa: F811
    with duckdb.connect(served["resources"]["warehouse"].database, read_only=True) as con:
        bars = read_bars(con, "clean.ohlcv", ["SP500", "NASDAQ"])
    bars = bars.assign(source_file="live.csv", source_row=np.arange(len(bars)))
    times = np.sort(bars["ts"].unique())
    start, first_cut, second_cut = times[-10], times[-8], times[-6]
    sp500 = bars[(bars["symbol"] == "SP500") & (bars["ts"] <= first_cut)]
    both = bars[bars["ts"] <= second_cut]
    r = served["resources"]
    run = run_paper(
        r["tracking"],
        served["settings"],
        PaperSource("csv", lambda: sp500, None),
        "production",
        "join",
        str(start),
    )
    assert [t.traded for t in run.ticks] == [["SP500"]] * 3
    run = run_paper(
        r["tracking"], served["settings"], PaperSource("csv", lambda: both, None), "production", "join"
    )
    assert [t.traded for t in run.ticks] == [["NASDAQ", "SP500"]] * 2  # NASDAQ's past was not traded
    book = ledger("join")
    nasdaq = book["paper.orders"].query("symbol == 'NASDAQ'")
    assert len(nasdaq) == 2 and (nasdaq["ts"] > pd.Timestamp(first_cut).tz_convert(None)).all()
    with duckdb.connect(str(account_database("join")), read_only=True) as con:
        curve = paper.equity_curve(con)
        rows = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("raw.ohlcv", "clean.ohlcv")]
    assert rows[0] == rows[1] == len(both)  # every bar in, as history or traded
    assert curve["portfolio"].pct_change().abs().max() < 0.05  # no jump of a whole account when NASDAQ joins
    assert curve["portfolio"].iloc[0] == pytest.approx(curve["SP500"].iloc[0] + 100_000)


def test_the_registered_backtest_decides_bit_for_bit_what_paper_and_serving_decide(served):  # noqa: F811
    """The registry's backtest runs the trained model through ``HRMTradingEnv`` (its agent on the
    kernels); paper trading and serving decide from the served files. The exposure arithmetic runs
    in numpy in both, so their returns and positions are equal, not merely close."""
    loaded = load_version(served["resources"]["tracking"], "production")
    config = loaded.config
    normalization = {k: tuple(v) for k, v in loaded.meta["normalization"].items()}
    with duckdb.connect(served["resources"]["warehouse"].database, read_only=True) as con:
        data = read_market_data(
            con, config, normalization, "CASE WHEN f.ts >= TIMESTAMP '2016-01-01' THEN 'test' END"
        )
    up = outcome_targets(data, config.training.outcome_horizon, config.trading.periods_per_year).up
    assert loaded.model.tilt_on  # a version whose tilt trades, so the arithmetic matters
    for symbol in data.symbols:
        registered = run_agent(served["models"]["1"], data, config, symbol, "test", True, up)
        served_files = run_version(loaded.model, data, config, symbol, "test")
        assert len(registered.returns) > 500 and (registered.positions.diff() != 0).sum() > 10
        assert (registered.positions.to_numpy() == served_files.positions.to_numpy()).all()
        assert (registered.returns.to_numpy() == served_files.returns.to_numpy()).all()
