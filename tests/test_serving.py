"""Serving: the served files decide as the eager model does; ``predict`` loads a registered version
torch-free; ``hrm-trading serve`` speaks MLflow's scoring protocol, follows the alias without a
restart, and answers bad requests with a 4xx and a message."""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pytest
import torch
import uvicorn
import yaml

from assets.decisions import decide_latest
from assets.registry import log_served_model
from assets.resources import HRMSettings
from assets.serving import load_version
from hrm_core.core.config import HRMConfig, load_config
from hrm_core.core.errors import HRMError
from hrm_core.dataset.market import load_market_data
from hrm_core.model.agent import HRMTradingAgent
from hrm_core.model.serving import OUTPUT_COLUMNS, ServedModel, save_served
from hrm_core.model.trader import MarketInputs
from hrm_core.training.trainer import build_model
from hrm_core.workflows.train import prepare_warehouse
from pipelines.resources import local_resources
from pipelines.server import ServerState, create_app, server_config

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "hierarchical_features": {"high_level_lookback": 20, "low_level_lookback": 10},
    "model": {"hidden_size": 16, "num_heads": 2, "h_pool": 5, "halt_max_steps": 3},
}


def tiny_config() -> HRMConfig:
    return load_config(REPO / "configs" / "hrm_cpu_small.yaml", **TINY)


def trading_model(config: HRMConfig, data, seed: int):
    """An untrained model whose heads read the state, with a Q head that halts about half the
    samples at their first segment."""
    torch.manual_seed(seed)
    model = build_model(config, data).eval()
    model.set_cycles(1, 2)
    strategic, tactical, *_ = sample_windows(data, config, 12)
    with torch.no_grad():
        for name, p in model.heads.named_parameters():
            if name != "hold":
                p.normal_(0.0, 0.5)
        model.heads.hold.fill_(0.7)  # decisions read the tilt held
        _, out = model.segment(
            model.initial_carry(12), MarketInputs(torch.tensor(strategic), torch.tensor(tactical))
        )
        model.heads.q.bias[0] -= (out.q_halt - out.q_continue).median() + 1e-3  # no sample on the edge
    return model


def eager_columns(model, config: HRMConfig, strategic, tactical, cap, held, benchmark) -> np.ndarray:
    """The decision columns the eager agent (no kernels) gives on the same windows."""
    agent = HRMTradingAgent(model, config, act=True, compiled=False)
    inputs = MarketInputs(torch.from_numpy(strategic), torch.from_numpy(tactical))
    d = agent.decide(inputs, cap, held, benchmark)
    out = d.outputs
    columns = [d.action_index.float(), d.tilt, d.target, d.position, d.confidence, out.p_up, out.market_risk]
    return torch.stack([*columns, *out.regime_probs.unbind(-1), d.segments.float()], -1).numpy()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A home with the sample data's warehouse and version 1 of a tiny HRM under ``production``."""
    home = tmp_path_factory.mktemp("serving") / "hrm_home"
    previous = os.environ.get("HRM_HOME")
    os.environ["HRM_HOME"] = str(home)
    config = tiny_config()
    resources = local_resources(home)
    con = duckdb.connect(resources["warehouse"].database)
    prepare_warehouse(config, con)
    data = load_market_data(con, config, 0)
    con.close()
    config_path = home / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    tracking = resources["tracking"]
    models = {}

    def register(seed: int) -> str:
        model = trading_model(config, data, seed)
        saved = {
            "feature_names": [list(data.strategic_names), list(data.tactical_names)],
            "normalization": {k: list(v) for k, v in data.normalization.items()},
            "fold": 0,
        }
        with tracking.active(), mlflow.start_run():
            info = log_served_model(home / f"served-{seed}", model, config, saved)
            version = str(mlflow.register_model(info.model_uri, tracking.model_name).version)
        models[version] = model
        return version

    tracking.client().set_registered_model_alias(tracking.model_name, "production", register(seed=1))
    yield {
        "home": home,
        "config": config,
        "config_path": config_path,
        "data": data,
        "resources": resources,
        "settings": HRMSettings(project_dir=str(home), config_path=str(config_path)),
        "register": register,
        "models": models,
    }
    if previous is None:
        os.environ.pop("HRM_HOME")
    else:
        os.environ["HRM_HOME"] = previous


def sample_windows(data, config: HRMConfig, n: int):
    hf = config.hierarchical_features
    rows = data.decision_rows("test", hf.high_level_lookback)
    rows = rows[np.linspace(0, len(rows) - 1, n).astype(int)]
    strategic, tactical = data.windows(rows, hf.high_level_lookback, hf.low_level_lookback)
    cap = np.linspace(0.5, 1.0, n).astype(np.float32)
    held = np.resize(np.array([0.0, 0.6, -0.6], np.float32), n)
    benchmark = np.resize(np.array([0.8, 0.4, 0.0], np.float32), n)
    return strategic.astype(np.float32), tactical.astype(np.float32), cap, held, benchmark


@pytest.mark.parametrize("architecture", ["hrm", "flat"])
def test_the_served_files_decide_as_the_eager_agent(served, tmp_path, architecture):
    config = served["config"].model_copy(
        update={"model": served["config"].model.model_copy(update={"architecture": architecture})}
    )
    model = trading_model(config, served["data"], seed=3)
    loaded = ServedModel.load(*save_served(tmp_path, model, config))
    assert (loaded.compiled is not None) == (architecture == "hrm")  # the HRM needs no torch
    strategic, tactical, cap, held, benchmark = sample_windows(served["data"], config, 12)
    decision = loaded.decide(strategic, tactical, cap, held, benchmark)
    expected = eager_columns(
        model, config, strategic, tactical, *map(torch.from_numpy, (cap, held, benchmark))
    )
    assert decision.shape == (12, len(OUTPUT_COLUMNS))
    column = OUTPUT_COLUMNS.index
    assert decision[:, column("action")].tolist() == expected[:, column("action")].tolist()
    assert decision[:, column("segments")].tolist() == expected[:, column("segments")].tolist()
    if architecture == "hrm":
        assert len(set(decision[:, column("segments")])) > 1  # some samples halted early
    np.testing.assert_allclose(decision, expected, atol=2e-5, rtol=1e-4)


def test_a_universe_split_across_threads_decides_as_one_batch(served, tmp_path):
    """The server's snapshot decides every symbol on every core: the parts' decisions are the
    batch's, bit for bit, in the batch's order."""
    model = trading_model(served["config"], served["data"], seed=3)
    loaded = ServedModel.load(*save_served(tmp_path, model, served["config"]))
    strategic, tactical, *_ = sample_windows(served["data"], served["config"], 300)
    raw, steps = loaded.heads(strategic, tactical)
    assert len(set(steps.tolist())) > 1  # samples halted at different segments
    for threads in (2, 3):
        split_raw, split_steps = loaded.heads(strategic, tactical, threads=threads)
        assert np.array_equal(split_raw, raw) and np.array_equal(split_steps, steps)


def test_the_served_model_refuses_inputs_of_the_wrong_shape_or_with_nans(served, tmp_path):
    loaded = ServedModel.load(*save_served(tmp_path, served["models"]["1"], served["config"]))
    strategic, tactical, cap, held, benchmark = sample_windows(served["data"], served["config"], 2)
    with pytest.raises(ValueError, match=r"strategic: expected shape \[2, 20, \d+\]"):
        loaded.decide(strategic[:, :5], tactical, cap, held, benchmark)
    with pytest.raises(ValueError, match=r"cap: expected shape \[2\]"):
        loaded.decide(strategic, tactical, cap[:1], held, benchmark)
    with pytest.raises(ValueError, match=r"benchmark: expected shape \[2\]"):
        loaded.decide(strategic, tactical, cap, held, benchmark[:1])
    tactical[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="tactical: holds a NaN"):
        loaded.decide(strategic, tactical, cap, held, benchmark)


def predict_process(served) -> tuple[list[dict], set[str]]:
    """``hrm-trading predict --json`` in a fresh process: its rows, and which of torch, MLflow and
    Dagster it imported."""
    script = (
        "import sys; from pipelines.cli import main;"
        "code = main(['predict', '--json']);"
        "print(*[m for m in ('torch', 'mlflow', 'dagster') if m in sys.modules], file=sys.stderr);"
        "raise SystemExit(code)"
    )
    env = {**os.environ, "HRM_HOME": str(served["home"])}
    done = subprocess.run(
        [sys.executable, "-c", script, str(served["config_path"])], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), set(done.stderr.split())


def test_predict_decides_torch_free_and_from_the_cache_until_the_registry_changes(served):
    tracking = served["resources"]["tracking"]
    rows, imported = predict_process(served)  # the registry has not been read yet: through MLflow
    assert {r["symbol"] for r in rows} == {"NASDAQ", "SP500"} and {r["version"] for r in rows} == {"1"}
    assert "torch" not in imported and "mlflow" in imported
    again, imported = predict_process(served)
    assert again == rows and imported == set()  # nothing changed: the cache alone answers
    version = served["register"](seed=4)
    tracking.client().set_registered_model_alias(tracking.model_name, "production", version)
    moved, imported = predict_process(served)  # the registry changed: asked again
    assert {r["version"] for r in moved} == {version} and "mlflow" in imported
    tracking.client().set_registered_model_alias(tracking.model_name, "production", "1")
    back, _ = predict_process(served)
    assert back == rows


class Client:
    """One keep-alive connection to the server."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body=None, content_type: str = "application/json"):
        data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        payload = json.loads(response.read())
        return response.status, payload, response.getheader("X-Model-Version")


class Running:
    """uvicorn serving ``app`` on a free port in a thread (as ``hrm-trading serve`` configures it)."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", 0, None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        self.server_port = self.server.servers[0].sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def server(served):
    r = served["resources"]
    running = Running(create_app(ServerState(r["tracking"], r["warehouse"], "production", 0.1)))
    yield running
    running.close()


def invocation(served, n: int = 3) -> tuple[dict, tuple]:
    arrays = sample_windows(served["data"], served["config"], n)
    names = ("strategic", "tactical", "cap", "held", "benchmark")
    return {"inputs": {k: a.tolist() for k, a in zip(names, arrays, strict=True)}}, arrays


def test_the_server_answers_the_scoring_protocol_with_the_eager_decisions(served, server):
    client = Client(server.server_port)
    assert client.request("GET", "/ping")[:2] == (
        200,
        {"status": "ok", "model": "hrm-trader@production", "version": "1"},
    )
    body, (strategic, tactical, cap, held, benchmark) = invocation(served)
    status, payload, version = client.request("POST", "/invocations", body)
    assert status == 200 and version == "1" and payload["columns"] == list(OUTPUT_COLUMNS)
    expected = eager_columns(
        served["models"]["1"],
        served["config"],
        strategic,
        tactical,
        torch.from_numpy(cap),
        torch.from_numpy(held),
        torch.from_numpy(benchmark),
    )
    np.testing.assert_allclose(np.array(payload["predictions"]), expected, atol=2e-5, rtol=1e-4)
    instances = [
        dict(zip(body["inputs"], values, strict=True))
        for values in zip(*body["inputs"].values(), strict=True)
    ]
    status, by_rows, _ = client.request("POST", "/invocations", {"instances": instances})
    assert status == 200 and by_rows["predictions"] == payload["predictions"]

    status, latest, _ = client.request("GET", "/decisions/latest")
    assert status == 200 and {row["symbol"] for row in latest} == {"NASDAQ", "SP500"}
    status, (alone,), _ = client.request("GET", "/decisions/latest?symbol=SP500")
    assert status == 200 and alone["symbol"] == "SP500" and alone["version"] == "1"
    assert alone["action"] == next(r for r in latest if r["symbol"] == "SP500")["action"]


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(served, server):
    client = Client(server.server_port)
    body, _ = invocation(served, n=2)
    short = {"inputs": {**body["inputs"], "cap": [1.0]}}
    nan = {"inputs": {**body["inputs"], "held": [0.0, float("nan")]}}  # json.dumps writes NaN
    cases = [
        ("POST", "/invocations", b"{not json", "application/json", 400, "not JSON"),
        ("POST", "/invocations", {"rows": []}, "application/json", 400, '"inputs"'),
        (
            "POST",
            "/invocations",
            {"inputs": {"strategic": [[0.0]]}},
            "application/json",
            400,
            "missing input",
        ),
        ("POST", "/invocations", short, "application/json", 400, "cap: expected shape [2]"),
        ("POST", "/invocations", nan, "application/json", 400, "NaN"),
        (
            "POST",
            "/invocations",
            {"inputs": {k: "x" for k in body["inputs"]}},
            "application/json",
            400,
            "inputs.strategic: Input should be a valid list",
        ),
        (
            "POST",
            "/invocations",
            {"inputs": {k: [["x"]] for k in body["inputs"]}},
            "application/json",
            400,
            "numbers",
        ),
        ("POST", "/invocations", body, "text/csv", 415, "application/json"),
        ("GET", "/invocations", None, "", 405, "POST"),
        ("GET", "/decisions/latest?symbol=NOPE", None, "", 404, "unknown symbol 'NOPE'"),
        ("GET", "/nowhere", None, "", 404, "/ping"),
    ]
    for method, path, payload, content_type, status, message in cases:
        got, answer, _ = client.request(method, path, payload, content_type)
        assert got == status and message in answer["message"], (path, answer)
    assert client.request("POST", "/invocations", body)[0] == 200  # the same connection still works


def test_the_server_follows_the_alias_without_a_restart(served, server):
    client = Client(server.server_port)
    body, _ = invocation(served)
    before = client.request("POST", "/invocations", body)
    tracking = served["resources"]["tracking"]
    version = served["register"](seed=2)
    tracking.client().set_registered_model_alias(tracking.model_name, "production", version)
    deadline = time.monotonic() + 30
    while client.request("GET", "/ping")[2] != version and time.monotonic() < deadline:
        time.sleep(0.05)
    after = client.request("POST", "/invocations", body)
    assert after[2] == after[1]["version"] == version and before[2] == "1"
    assert after[1]["predictions"] != before[1]["predictions"]
    tracking.client().delete_registered_model_alias(tracking.model_name, "production")
    deadline = time.monotonic() + 30
    while client.request("GET", "/ping")[0] != 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, answer, _ = client.request("POST", "/invocations", body)
    assert status == 503 and "no model version has the alias 'production'" in answer["message"]
    tracking.client().set_registered_model_alias(tracking.model_name, "production", "1")
    deadline = time.monotonic() + 30
    while client.request("GET", "/ping")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.request("GET", "/ping")[2] == "1"


def test_hrm_trading_serve_starts_from_the_cli_and_answers(served):
    env = {**os.environ, "HRM_HOME": str(served["home"])}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "serve",
            "--port",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "serving hrm-trader@production (version 1) on http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert Client(port).request("GET", "/ping")[0] == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def raw_request(port: int, payload: bytes, read: bool = True) -> tuple[int, dict]:
    """Send bytes as they are; the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        if not read:
            return 0, {}
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < length_of(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def length_of(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def post(body: bytes, length: int | None = None, content_type: bytes = b"application/json") -> bytes:
    size = len(body) if length is None else length
    return (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(size).encode()
        + b"\r\n\r\n"
        + body
    )


def test_hostile_clients_get_a_4xx_and_never_stall_the_others(served, server, monkeypatch):
    monkeypatch.setattr("pipelines.server.READ_TIMEOUT", 1.0)
    port = server.server_port
    slow = []
    for _ in range(20):  # slow-loris: connections that send half a request and wait
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(sock)
    try:
        started = time.monotonic()
        assert Client(port).request("GET", "/ping")[0] == 200
        assert time.monotonic() - started < 2.0  # not queued behind them
        cases = {
            "deeply nested": (post(b"[" * 100_000 + b"]" * 100_000), 400),
            "nested within the parser's depth": (
                post(b'{"inputs": {"cap": ' + b"[" * 500 + b"]" * 500 + b"}}"),
                400,
            ),
            "not UTF-8": (post(b"\xff\xfe\x00{"), 400),
            "declares 4 GB": (post(b"{}", length=4 * 2**30), 413),
            "over the limit": (post(b" " * (16 * 2**20 + 1)), 413),
            "truncated": (post(b'{"inputs": {', length=1000), 408),
            "decisions body that never comes": (
                b"POST /decisions/latest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{",
                408,
            ),
            "traversal in symbol": (
                b"GET /decisions/latest?symbol=../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                404,
            ),
            "a position out of range": (
                b"GET /decisions/latest?position=1e308 HTTP/1.1\r\nHost: x\r\n\r\n",
                400,
            ),
        }
        for name, (payload, status) in cases.items():
            got, answer = raw_request(port, payload)
            assert got == status and answer.get("message"), (name, got, answer)
        body, _ = invocation(served)
        assert Client(port).request("POST", "/invocations", body)[0] == 200  # still serving
    finally:
        for sock in slow:
            sock.close()


def test_a_token_guards_every_route_but_ping_and_no_token_means_loopback_only(served):
    r = served["resources"]
    state = ServerState(r["tracking"], r["warehouse"], "production", 60)
    with pytest.raises(HRMError, match="refusing to serve beyond this machine without a token"):
        server_config(create_app(state), "0.0.0.0", 0, None)
    assert server_config(create_app(state, "s3cret"), "0.0.0.0", 0, "s3cret").host == "0.0.0.0"
    running = Running(create_app(state, token="s3cret"))
    try:
        client = Client(running.server_port)
        assert client.request("GET", "/ping")[0] == 200
        status, answer, _ = client.request("GET", "/decisions/latest")
        assert status == 401 and "Bearer" in answer["message"]
        client.connection.request("GET", "/decisions/latest", headers={"Authorization": "Bearer wrong"})
        wrong = client.connection.getresponse()
        assert wrong.status == 401 and wrong.read()
        client.connection.request("GET", "/decisions/latest", headers={"Authorization": "Bearer s3cret"})
        response = client.connection.getresponse()
        assert response.status == 200 and len(json.loads(response.read())) == 2
    finally:
        running.close()


def test_decisions_take_the_position_held(served, server):
    client = Client(server.server_port)
    _, flat, _ = client.request("GET", "/decisions/latest?symbol=SP500")
    _, held, _ = client.request("GET", "/decisions/latest?symbol=SP500&position=0.8")
    status, posted, _ = client.request(
        "POST", "/decisions/latest", {"symbols": ["SP500"], "positions": {"SP500": 0.8}}
    )
    assert status == 200 and posted == held
    assert flat[0]["held"] == 0.0 and flat[0]["held_from"] == "none"
    assert held[0]["held"] == pytest.approx(0.8) and held[0]["held_from"] == "request"
    assert held[0]["tilt"] != flat[0]["tilt"]  # the tilt reads the position held (hold weight 0.7)
    r = served["resources"]
    with r["warehouse"].get_connection() as con:
        (expected,) = decide_latest(load_version(r["tracking"], "production"), con, ["SP500"], 0.8)
    assert {k: held[0][k] for k in expected} == expected
    status, answer, _ = client.request(
        "POST", "/decisions/latest", {"symbols": ["SP500"], "positions": {"NASDAQ": 1}}
    )
    assert status == 400 and "NASDAQ" in answer["message"]
