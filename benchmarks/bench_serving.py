"""Serving benchmark: the CPU preset's HRM (3×7 cycles, ``halt_max_steps`` 8, untrained so that
every decision runs all 8 segments) registered in a temporary home on the sample data.

1. Format: a fresh process loading the served version and deciding for two symbols, for the
   served files (``weights.npz`` through the numba kernels), the same weights in eager torch, and a
   ``torch.export`` program of the same decision (the previous format; ``--skip-export`` skips
   its export, which takes minutes).
2. ``hrm-trading predict`` wall time, cold: through the registry (the first after a change) and
   from the served cache.
3. ``hrm-trading serve`` under load: ``POST /invocations`` at batch 1 from 1 and 8 concurrent
   clients (keep-alive connections, threads of one client process), ``--seconds`` each:
   decisions/s and p50 / p99 latency, against a server pinned to 1 BLAS thread and one given 2
   (``HRM_THREADS``).
4. ``GET /decisions/latest?symbol=S`` (a random symbol, a random position held) from 8 clients, and
   all symbols in one request, on the sample and on generated warehouses of up to 1,000 symbols ×
   2,000 bars (``--sizes``), with the time the server takes to build its snapshot of a warehouse
   (read the last bars of every symbol and run the network on them; paid once per warehouse
   change, in the background).

    python benchmarks/bench_serving.py [--seconds 10] [--skip-export] [--sizes 100x2000,1000x500,1000x2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import torch

from assets.registry import log_served_model
from hrm_core.core.config import load_config
from hrm_core.data.schema import OHLCV_COLUMNS
from hrm_core.data.synthetic import random_walk_bars
from hrm_core.data.warehouse import ensure_tables
from hrm_core.dataset.market import load_market_data
from hrm_core.features.build import build_features
from hrm_core.model.act import run_segments
from hrm_core.model.exposure import action_of, next_position
from hrm_core.model.trader import MarketInputs
from hrm_core.training.trainer import build_model
from hrm_core.workflows.latest import latest_bars
from hrm_core.workflows.train import prepare_warehouse
from pipelines.resources import local_resources

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "hrm_cpu_small.yaml"


class ExportedDecision(torch.nn.Module):
    """The decision as one traced graph (all segments run, halting by masks): the exported format."""

    def __init__(self, model, segments: int, band: float) -> None:
        super().__init__()
        self.model, self.segments, self.band = model.eval(), segments, band

    def forward(self, strategic, tactical, cap, held):
        run = run_segments(
            self.model, MarketInputs(strategic, tactical), self.segments, True, stop_when_all_halted=False
        )
        target = run.final.tilt_logit * cap
        position = next_position(target, held, self.band)
        return torch.stack([action_of(position, held).float(), target, position, run.steps.float()], -1)


def registered_home(home: Path) -> dict:
    """A home with the sample warehouse and the CPU preset's HRM as version 1, alias production."""
    os.environ["HRM_HOME"] = str(home)
    config = load_config(CONFIG, model={"halt_max_steps": 8})
    resources = local_resources(home)
    con = duckdb.connect(resources["warehouse"].database)
    prepare_warehouse(config, con)
    data = load_market_data(con, config, 0)
    con.close()
    torch.manual_seed(0)
    model = build_model(config, data).eval()
    last = config.training.curriculum[-1]
    model.set_cycles(last.H_cycles, last.L_cycles)
    saved = {
        "feature_names": [list(data.strategic_names), list(data.tactical_names)],
        "normalization": {k: list(v) for k, v in data.normalization.items()},
        "fold": 0,
    }
    tracking = resources["tracking"]
    with tracking.active(), mlflow.start_run():
        info = log_served_model(home / "served-files", model, config, saved)
        version = mlflow.register_model(info.model_uri, tracking.model_name).version
    tracking.client().set_registered_model_alias(tracking.model_name, "production", version)
    config_path = home / "preset.yaml"
    config_path.write_text(CONFIG.read_text().replace("halt_max_steps: 4", "halt_max_steps: 8"))
    hf = config.hierarchical_features
    rows = data.decision_rows("test", hf.high_level_lookback)
    return {"config": config, "config_path": config_path, "data": data, "model": model, "rows": rows}


LOAD_SCRIPTS = {
    "served files (numba)": """
from pathlib import Path; import numpy as np
from hrm_core.model.serving import ServedModel
m = ServedModel.load(Path('{folder}/weights.npz'), Path('{folder}/spec.json'))
s, t = np.load('{folder}/windows.npz').values()
m.decide(s, t, np.ones(2), np.zeros(2), np.zeros(2))
""",
    "eager torch": """
from pathlib import Path; import json, numpy as np, torch
from hrm_core.core.config import HRMConfig
from hrm_core.model.agent import HRMTradingAgent
from hrm_core.model.build import build_model_for
from hrm_core.model.trader import MarketInputs
spec = json.loads(Path('{folder}/spec.json').read_text())
config = HRMConfig.model_validate(spec['config'])
model = build_model_for(config, *spec['feature_names'])
model.load_state_dict({{k: torch.from_numpy(v) for k, v in np.load('{folder}/weights.npz').items()}})
model.set_cycles(*spec['cycles'])
s, t = np.load('{folder}/windows.npz').values()
agent = HRMTradingAgent(model.eval(), config, act=True, compiled=False)
inputs = MarketInputs(torch.from_numpy(s), torch.from_numpy(t))
agent.decide(inputs, torch.ones(2), torch.zeros(2), torch.zeros(2))
""",
    "torch.export program": """
import numpy as np, torch
program = torch.export.load('{folder}/decision.pt2').module()
s, t = np.load('{folder}/windows.npz').values()
program(torch.from_numpy(s), torch.from_numpy(t), torch.ones(2), torch.zeros(2))
""",
}


def format_times(setup: dict, folder: Path, export: bool) -> list[dict]:
    """Wall time of a fresh process that loads each format and decides for two symbols."""
    data, config = setup["data"], setup["config"]
    hf = config.hierarchical_features
    rows = np.array([np.flatnonzero(data.symbol_id == s)[-1] for s in range(2)])
    strategic, tactical = data.windows(rows, hf.high_level_lookback, hf.low_level_lookback)
    np.savez(folder / "windows.npz", strategic=strategic, tactical=tactical)
    for name in ("weights.npz", "spec.json"):
        (folder / name).write_bytes((setup["home"] / "served-files" / name).read_bytes())
    results = []
    if export:
        start = time.perf_counter()
        with torch.no_grad():
            module = ExportedDecision(
                setup["model"], config.model.halt_max_steps, config.trading.no_trade_band
            )
            args = (torch.from_numpy(strategic), torch.from_numpy(tactical), torch.ones(2), torch.zeros(2))
            program = torch.export.export(module, args)
        torch.export.save(program, folder / "decision.pt2")
        nodes = len(program.graph.nodes)
        print(f"torch.export of the decision: {time.perf_counter() - start:.0f} s, {nodes:,} graph nodes")
    for name, script in LOAD_SCRIPTS.items():
        if name == "torch.export program" and not export:
            continue
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", script.format(folder=folder)], check=True, env=_env())
        results.append({"format": name, "cold_seconds": time.perf_counter() - start})
    return results


def _env(threads: int = 1) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HRM_THREADS": str(threads)}


def predict_times(setup: dict) -> dict:
    """``hrm-trading predict`` wall time through the registry, then from the cache."""
    command = [sys.executable, "-m", "pipelines.cli", "predict"]
    times = {}
    for case in ("through the registry", "from the cache"):
        if case == "through the registry":
            (setup["home"] / "served" / "hrm-trader" / "aliases.json").unlink(missing_ok=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, env=_env(), capture_output=True)
        times[case] = time.perf_counter() - start
    return times


def start_server(threads: int = 1) -> tuple[subprocess.Popen, int]:
    """``hrm-trading serve`` on a free port, its BLAS and OpenMP on ``threads`` threads; the process
    and the port it printed."""
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", "0"],
        env=_env(threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = server.stdout.readline()
    return server, int(line.split("http://127.0.0.1:")[1].split()[0])


def load_test(setup: dict, clients: int, seconds: float, threads: int = 1) -> dict:
    """``clients`` keep-alive connections posting batch-1 invocations for ``seconds`` to a server
    whose BLAS and OpenMP use ``threads`` threads."""
    server, port = start_server(threads)
    try:
        data, hf = setup["data"], setup["config"].hierarchical_features
        rows = setup["rows"][:: max(1, len(setup["rows"]) // 64)]
        strategic, tactical = data.windows(rows, hf.high_level_lookback, hf.low_level_lookback)
        bodies = [
            json.dumps(
                {
                    "inputs": {
                        "strategic": [s.tolist()],
                        "tactical": [t.tolist()],
                        **{"cap": [1.0], "held": [0.0], "benchmark": [0.5]},
                    }
                }
            ).encode()
            for s, t in zip(strategic, tactical, strict=True)
        ]
        latencies: list[list[float]] = [[] for _ in range(clients)]
        stop = time.perf_counter() + seconds

        def client(k: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            i = k
            while time.perf_counter() < stop:
                start = time.perf_counter()
                connection.request(
                    "POST", "/invocations", bodies[i % len(bodies)], {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                latencies[k].append(time.perf_counter() - start)
                i += clients

        workers = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        begin = time.perf_counter()
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        elapsed = time.perf_counter() - begin
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = np.concatenate([np.array(x) for x in latencies]) * 1000
    return {
        "clients": clients,
        "threads": threads,
        "decisions_per_s": len(ms) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests": len(ms),
    }


def generated_warehouse(path: Path, symbols: int, bars: int) -> Path:
    """A warehouse of ``symbols`` generated symbols × ``bars`` daily bars, with features."""
    frame = random_walk_bars(symbols, bars, seed=symbols * bars)[list(OHLCV_COLUMNS)]
    frame["ts"] = frame["ts"].dt.tz_localize(None)
    with duckdb.connect(str(path)) as con:
        ensure_tables(con)
        con.from_df(frame).insert_into("clean.ohlcv")
        build_features(con)
    return path


def snapshot_seconds(home: Path) -> float:
    """What the server pays when the warehouse changes: the last bars of every symbol and the
    network on them (best of 3)."""
    from assets.serving import load_version
    from pipelines.resources import local_resources

    resources = local_resources(home)
    loaded = load_version(resources["tracking"], "production")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with duckdb.connect(resources["warehouse"].database, read_only=True) as con:
            latest_bars(con, loaded, threads=os.cpu_count() or 1)  # as the server builds it
        times.append(time.perf_counter() - start)
    return min(times)


def decisions_test(setup: dict, clients: int, seconds: float) -> dict:
    """``clients`` keep-alive connections asking ``/decisions/latest`` for one random symbol at a
    random position for ``seconds``; then all symbols in one request (best of 5)."""
    server, port = start_server()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("GET", "/decisions/latest")
        symbols = [row["symbol"] for row in json.loads(connection.getresponse().read())]
        latencies: list[list[float]] = [[] for _ in range(clients)]
        stop = time.perf_counter() + seconds

        def client(k: int) -> None:
            rng = np.random.default_rng(k)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while time.perf_counter() < stop:
                symbol, held = symbols[rng.integers(len(symbols))], rng.uniform(-1, 1)
                start = time.perf_counter()
                connection.request("GET", f"/decisions/latest?symbol={symbol}&position={held:.3f}")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                latencies[k].append(time.perf_counter() - start)

        workers = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        every = []
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # the first one idled out
        for _ in range(5):
            start = time.perf_counter()
            connection.request("GET", "/decisions/latest?position=0.5")
            rows = json.loads(connection.getresponse().read())
            every.append(time.perf_counter() - start)
            assert len(rows) == len(symbols)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = np.concatenate([np.array(x) for x in latencies]) * 1000
    return {
        "symbols": len(symbols),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests": len(ms),
        "all_symbols_s": min(every),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--sizes", default="100x2000,1000x500,1000x2000", help="generated symbols x bars")
    parser.add_argument("--skip-formats", action="store_true", help="only the decisions part (4)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="hrm-bench-serving-") as tmp:
        home = Path(tmp) / "home"
        setup = {**registered_home(home), "home": home}
        print("served model: CPU preset HRM, 3×7 cycles, halt_max_steps 8, two symbols (sample data)")
        formats, predict, loads = [], {}, []
        if not args.skip_formats:
            formats = format_times(setup, Path(tmp), export=not args.skip_export)
            for r in formats:
                print(f"cold load + decide, {r['format']:<22} {r['cold_seconds']:>6.2f} s")
            predict = predict_times(setup)
            for case, seconds in predict.items():
                print(f"hrm-trading predict, {case:<22} {seconds:>6.2f} s")
            print(f"\nhrm-trading serve, POST /invocations at batch 1, {args.seconds:g} s each")
            print(
                f"{'clients':>7} {'threads':>7} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'requests':>9}"
            )
            for clients, threads in ((1, 1), (1, 2), (8, 1), (8, 2)):
                r = load_test(setup, clients, args.seconds, threads)
                loads.append(r)
                rate, p50, p99 = r["decisions_per_s"], r["p50_ms"], r["p99_ms"]
                print(f"{clients:>7} {threads:>7} {rate:>12,.0f} {p50:>8.2f} {p99:>8.2f} {r['requests']:>9}")
        print(f"\nGET /decisions/latest, 8 clients, one random symbol and position each, {args.seconds:g} s")
        print(
            f"{'warehouse':>22} {'snapshot s':>10} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} "
            f"{'all symbols s':>13}"
        )
        sizes = [("sample", None)] + [
            (size, tuple(map(int, size.split("x")))) for size in args.sizes.split(",")
        ]
        latest = []
        warehouse = home / "warehouse.duckdb"
        sample = Path(tmp) / "sample.duckdb"
        warehouse.rename(sample)
        for name, shape in sizes:
            built = sample if shape is None else generated_warehouse(Path(tmp) / f"{name}.duckdb", *shape)
            shutil.copy(built, warehouse)
            r = {
                "warehouse": name,
                "snapshot_s": snapshot_seconds(home),
                **decisions_test(setup, 8, args.seconds),
            }
            latest.append(r)
            label = "sample (2 × 5,000)" if shape is None else f"{shape[0]:,} × {shape[1]:,}"
            print(
                f"{label:>22} {r['snapshot_s']:>10.2f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['requests']:>9} {r['all_symbols_s']:>13.3f}"
            )
    print(json.dumps({"formats": formats, "predict": predict, "load": loads, "decisions": latest}))


if __name__ == "__main__":
    main()
