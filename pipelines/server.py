"""``hrm-trading serve``: the registered model over HTTP on FastAPI and uvicorn (the stack MLflow 3
serves models with), following its alias.

MLflow's scoring protocol, so MLflow clients and load balancers work unchanged:
- ``GET /ping``: 200 while a version is loaded (503 when none holds the alias); never needs a token;
- ``POST /invocations`` (``application/json``): ``{"inputs": {"strategic": [...], "tactical": [...],
  "cap": [...], "held": [...], "benchmark": [...]}}`` (named tensors) or
  ``{"instances": [{...}, ...]}`` (one object per sample)
  → ``{"predictions": [[...], ...], "columns": [...], "model": ..., "version": ...}``;
and ``GET /decisions/latest[?symbol=S&position=P]`` (or ``POST`` with ``{"symbols": [...],
"positions": {"S": P}}``): each symbol's decision at its latest bar for the exposure held, which
defaults to the paper account's when one is trading (``hrm-trading paper``), else none. OpenAPI
docs at ``/docs``.

Latency does not grow with the warehouse: a background thread keeps, per warehouse snapshot and
version, every symbol's latest bar with the network's outputs there (``workflows/latest.py``),
recomputed when the warehouse, the paper account or the alias changes; a request only turns
them into decisions for its positions. A request between a change and the end of its refresh is
answered from the previous snapshot.

Hardening: the server binds 127.0.0.1 unless a token is configured (``HRM_SERVE_TOKEN``); with
one, every route but ``/ping`` needs ``Authorization: Bearer <token>``, and the OpenAPI docs are
off. Bodies are limited to
``MAX_BODY_BYTES``, a whole body must arrive within ``READ_TIMEOUT`` seconds, idle keep-alive
connections close after ``KEEP_ALIVE`` seconds, and uvicorn's event loop serves every other
client while one is slow. A bad request gets a 4xx with a message saying what was wrong.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import duckdb
import numpy as np
import uvicorn
from dagster_duckdb import DuckDBResource
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.concurrency import run_in_threadpool

from assets.decisions import decision_rows
from assets.resources import IcebergWarehouse, MlflowResource, warehouse_exists
from assets.serving import load_version, no_version_message
from hrm_core.core.errors import HRMError
from hrm_core.model.serving import INPUT_NAMES, OUTPUT_COLUMNS, LoadedVersion
from hrm_core.workflows.latest import LatestBars, NotReady, UnknownSymbol, latest_bars

MAX_BODY_BYTES = 16 * 2**20
READ_TIMEOUT = 10.0
KEEP_ALIVE = 5
MAX_CONNECTIONS = 256
MAX_POSITION = 10.0
TOKEN_ENV = "HRM_SERVE_TOKEN"
log = logging.getLogger("hrm_trading.serve")


class Tensors(BaseModel):
    """One batch of named inputs (``ServedModel.decide``): windows [B, lookback, features] and
    [B] numbers."""

    model_config = ConfigDict(extra="forbid")
    strategic: list[Any] | None = None
    tactical: list[Any] | None = None
    cap: list[Any] | None = None
    held: list[Any] | None = None
    benchmark: list[Any] | None = None


class Instance(BaseModel):
    """One sample's named inputs: windows [lookback, features] and numbers."""

    model_config = ConfigDict(extra="forbid")
    strategic: list[Any] | None = None
    tactical: list[Any] | None = None
    cap: float | None = None
    held: float | None = None
    benchmark: float | None = None


class ScoringRequest(BaseModel):
    """MLflow's scoring request: named tensors (``inputs``) or one object per sample (``instances``)."""

    inputs: Tensors | None = None
    instances: list[Instance] | None = None


class ScoringResponse(BaseModel):
    predictions: list[list[float]]
    columns: list[str]
    model: str
    version: str


class DecisionsRequest(BaseModel):
    """Which symbols (default all) and the exposure held in each (default: the paper account's)."""

    model_config = ConfigDict(extra="forbid")
    symbols: list[str] | None = Field(None, max_length=100_000)
    positions: dict[str, float] | None = None


_DECISION_FIELDS: dict[str, Any] = {
    "symbol": (str, ...),
    "bar": (str, ...),
    "close": (float, ...),
    "held": (float, Field(..., description="the exposure the decision read, a fraction of equity")),
    "held_from": (str, Field(..., description="request, paper:<account> or none")),
    **{name: (float, ...) for name in OUTPUT_COLUMNS},
    "action": (str, ...),
    "segments": (int, ...),
    "model": (str, ...),
    "version": (str, ...),
    "tilt_deployed": (bool, ...),
}
Decision = create_model("Decision", **_DECISION_FIELDS)


class Ping(BaseModel):
    status: str
    model: str
    version: str


def authorised(request: Request) -> None:
    """Every route but ``/ping`` needs the token, when the server has one."""
    token = request.app.state.token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            HTTPStatus.UNAUTHORIZED,
            f"send Authorization: Bearer <token> (the server's {TOKEN_ENV})",
            headers={"WWW-Authenticate": "Bearer"},
        )


def current_snapshot(request: Request) -> Snapshot:
    """What the request is answered from (503 while no version holds the alias)."""
    state: ServerState = request.app.state.serving
    if state.snapshot is None:
        raise HTTPException(HTTPStatus.SERVICE_UNAVAILABLE, state.missing)
    return state.snapshot


Served = Annotated["Snapshot", Depends(current_snapshot)]
ROUTES = "GET /ping, POST /invocations, GET|POST /decisions/latest"


def warehouse_snapshot(warehouse: DuckDBResource) -> str:
    """Changes whenever the warehouse does: the Iceberg tables' current snapshots, or the DuckDB
    file's and its write-ahead log's sizes and modification times."""
    if isinstance(warehouse, IcebergWarehouse):
        return json.dumps(warehouse.iceberg().snapshots(), sort_keys=True)
    return _file_state(Path(warehouse.database))


def _file_state(path: Path) -> str:
    parts = []
    for p in (path, Path(f"{path}.wal")):
        try:
            st = p.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append("-")
    return "/".join(parts)


@dataclass(frozen=True)
class PaperHolding:
    """A symbol's paper account at its latest bar: the exposure held going into the bar's decision
    and the one that decision chose (held from the next open)."""

    ts: np.datetime64
    before: float
    after: float

    def at(self, bar: np.datetime64) -> float:
        """The exposure held at ``bar``'s close, before deciding there: the account's own decision
        read ``before`` at its latest bar; at a later bar it holds what it chose."""
        return self.before if bar <= self.ts else self.after


@dataclass(frozen=True)
class Snapshot:
    """What requests are answered from: a version, its latest bars, the paper account's positions."""

    loaded: LoadedVersion
    bars: LatestBars | None  # None: the warehouse is empty
    paper: dict[str, PaperHolding]  # symbol -> the paper account's exposures
    key: tuple[str, str, str]  # (version, warehouse snapshot, paper account state)


class ServerState:
    """The version the alias holds and the snapshot served, refreshed by a background thread."""

    def __init__(
        self,
        tracking: MlflowResource,
        warehouse: DuckDBResource,
        alias: str,
        poll_seconds: float = 2.0,
        paper_account: Path | None = None,
    ) -> None:
        self.tracking, self.warehouse, self.alias = tracking, warehouse, alias
        self.poll_seconds, self.paper_account = poll_seconds, paper_account
        self.snapshot: Snapshot | None = None
        self.missing = ""
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="refresher", daemon=True)
        self.refresh()
        if self.snapshot is None:  # fail fast, naming what to do
            raise HRMError(no_version_message(tracking, alias))

    @property
    def paper_label(self) -> str:
        return f"paper:{self.paper_account.parent.name}" if self.paper_account else "none"

    def refresh(self) -> None:
        """Load the version the alias points at, and the snapshot, if either changed."""
        found = self.tracking.version_with_alias(self.alias)
        if found is None:
            if self.snapshot is not None:
                log.warning("no version holds the alias %r any more; answering 503", self.alias)
            self.snapshot, self.missing = None, f"no model version has the alias '{self.alias}'"
            return
        current = self.snapshot
        loaded = current.loaded if current and current.loaded.version == str(found.version) else None
        if loaded is None:
            loaded = load_version(self.tracking, self.alias)
            if current is not None:
                log.info("%s: now serving version %s", loaded.label, loaded.version)
        market = (loaded.version, warehouse_snapshot(self.warehouse))
        paper_state = _file_state(self.paper_account) if self.paper_account else "-"
        if current is not None and current.key == (*market, paper_state):
            return
        bars = current.bars if current is not None and current.key[:2] == market else self._latest(loaded)
        paper = current.paper if current is not None and current.key[2] == paper_state else None
        if paper is None and self.paper_account:
            paper = self._paper_positions()
            if paper is None:  # a paper run holds the file: keep what was read, and read again next time
                paper, paper_state = (current.paper if current else {}), "unread"
        self.snapshot = Snapshot(loaded, bars, paper or {}, (*market, paper_state))

    def _latest(self, loaded: LoadedVersion) -> LatestBars | None:
        if not warehouse_exists(self.warehouse):
            return None
        with self.warehouse.get_connection() as con:  # the network on every symbol, on every core
            return latest_bars(con, loaded, threads=os.cpu_count() or 1)

    def _paper_positions(self) -> dict[str, PaperHolding] | None:
        """Each symbol's latest bar in the paper account, the exposure its decision there read and
        the one it chose (None when the account cannot be read now)."""
        if not self.paper_account.exists():
            return {}
        try:
            with duckdb.connect(str(self.paper_account), read_only=True) as con:
                rows = con.execute(
                    """
                    SELECT p.symbol, p.ts, coalesce(o.held, p.held), p.held
                    FROM paper.positions AS p LEFT JOIN paper.orders AS o USING (symbol, ts)
                    QUALIFY row_number() OVER (PARTITION BY p.symbol ORDER BY p.ts DESC) = 1
                    """
                ).fetchall()
        except duckdb.Error:
            return None
        return {
            symbol: PaperHolding(np.datetime64(ts), float(before), float(after))
            for symbol, ts, before, after in rows
        }

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as error:  # the registry or the warehouse may be briefly unavailable
                log.warning("could not refresh %r: %s", self.alias, error)


def create_app(state: ServerState, token: str | None = None) -> FastAPI:
    """The application: routes, auth as a dependency, errors as MLflow writes them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        yield
        state.stop()

    documented = {} if token is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        **documented,
        title="hrm-trading serve",
        description=__doc__.split("\n\n")[1],
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
    )

    app.state.serving, app.state.token = state, token
    guarded = [Depends(authorised)]

    @app.get("/ping", response_model=Ping)
    async def ping(served: Served) -> dict:
        loaded = served.loaded
        return {"status": "ok", "model": loaded.label, "version": loaded.version}

    @app.post(
        "/invocations",
        response_model=ScoringResponse,
        dependencies=guarded,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ScoringRequest.model_json_schema()}},
            }
        },
    )
    async def invocations(request: Request, served: Served) -> dict:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise HTTPException(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {content_type or '(none)'!r}: send application/json",
            )
        body = await _body(request)
        # In the thread pool: the kernels run without the GIL, so clients are decided in parallel.
        decision = await run_in_threadpool(_score, served.loaded, body)
        loaded = served.loaded
        return {
            "predictions": decision.tolist(),
            "columns": list(OUTPUT_COLUMNS),
            "model": loaded.label,
            "version": loaded.version,
        }

    @app.get("/decisions/latest", response_model=list[Decision], dependencies=guarded)
    async def latest(
        served: Served,
        symbol: Annotated[list[str] | None, Query(description="only these symbols (repeatable)")] = None,
        position: Annotated[
            float | None,
            Query(
                description="the exposure held in each, a fraction of equity",
                ge=-MAX_POSITION,
                le=MAX_POSITION,
            ),
        ] = None,
    ) -> list[dict]:
        positions = (
            None if position is None else dict.fromkeys(symbol or served_bars(served).symbols, position)
        )
        return await run_in_threadpool(decisions, served, symbol, positions, state.paper_label)

    @app.post(
        "/decisions/latest",
        response_model=list[Decision],
        dependencies=guarded,
        openapi_extra={
            "requestBody": {"content": {"application/json": {"schema": DecisionsRequest.model_json_schema()}}}
        },
    )
    async def latest_for(request: Request, served: Served) -> list[dict]:
        try:
            body = DecisionsRequest.model_validate_json((await _body(request)) or b"{}")
        except ValidationError as error:
            raise HTTPException(HTTPStatus.BAD_REQUEST, _first_error(error)) from error
        return await run_in_threadpool(decisions, served, body.symbols, body.positions, state.paper_label)

    @app.api_route("/invocations", methods=["GET", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def wrong_method() -> None:
        raise HTTPException(HTTPStatus.METHOD_NOT_ALLOWED, "POST /invocations with a JSON body")

    _errors(app)

    @app.middleware("http")
    async def version_header(request: Request, call_next: Callable):
        response = await call_next(request)
        if state.snapshot is not None:
            response.headers["X-Model-Version"] = state.snapshot.loaded.version
        return response

    return app


def served_bars(served: Snapshot) -> LatestBars:
    if served.bars is None:
        raise HTTPException(HTTPStatus.SERVICE_UNAVAILABLE, "the warehouse is empty; run `make run` first")
    return served.bars


def decisions(
    served: Snapshot, symbols: list[str] | None, positions: dict[str, float] | None, paper_label: str
) -> list[dict]:
    """Rows for ``symbols`` (default: every symbol with history enough to decide): held from
    ``positions``, else the paper account, else none."""
    bars = served_bars(served)
    wanted = symbols or [s for s, ready in zip(bars.symbols, bars.ready, strict=True) if ready]
    positions = positions or {}
    unknown = sorted(set(positions) - set(wanted))
    if unknown:
        raise HTTPException(
            HTTPStatus.BAD_REQUEST, f"positions: {unknown[0]!r} is not among the symbols asked"
        )
    bad = [s for s, p in positions.items() if not np.isfinite(p) or abs(p) > MAX_POSITION]
    if bad:
        raise HTTPException(
            HTTPStatus.BAD_REQUEST,
            f"positions: {bad[0]!r} must be a finite exposure in [-{MAX_POSITION:g}, {MAX_POSITION:g}]",
        )
    try:
        rows_at = bars.index(wanted)
    except UnknownSymbol as error:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(error)) from error
    held, sources = [], []
    for s, i in zip(wanted, rows_at, strict=True):
        if s in positions:
            held.append(positions[s]), sources.append("request")
        elif s in served.paper:
            held.append(served.paper[s].at(bars.ts[i])), sources.append(paper_label)
        else:
            held.append(0.0), sources.append("none")
    try:
        rows = decision_rows(served.loaded, bars, wanted, np.array(held))
    except NotReady as error:
        raise HTTPException(HTTPStatus.CONFLICT, str(error)) from error
    for row, source in zip(rows, sources, strict=True):
        row["held_from"] = source
    return rows


async def _body(request: Request) -> bytes:
    """The request body, or a 408 when the whole of it has not arrived within ``READ_TIMEOUT``
    seconds (however slowly it trickles)."""
    chunks = []
    deadline = asyncio.get_running_loop().time() + READ_TIMEOUT
    stream = request.stream().__aiter__()
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(left, 0.0))
        except StopAsyncIteration:
            return b"".join(chunks)
        except TimeoutError as error:
            raise HTTPException(
                HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {READ_TIMEOUT:g} s"
            ) from error
        chunks.append(chunk)


def _errors(app: FastAPI) -> None:
    """Every error as MLflow's scoring server writes it: ``{"error_code", "message"}``."""

    def answer(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        phrase = HTTPStatus(status).phrase
        return JSONResponse({"error_code": phrase, "message": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
        if error.status_code == HTTPStatus.NOT_FOUND and message == "Not Found":
            message = f"no such path {request.url.path!r}: {ROUTES}"
        if error.status_code == HTTPStatus.METHOD_NOT_ALLOWED and message == "Method Not Allowed":
            message = f"{request.method} {request.url.path}: not allowed; {ROUTES}"
        return answer(error.status_code, message, getattr(error, "headers", None))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(StarletteHTTPException, http_error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return answer(HTTPStatus.BAD_REQUEST, f"{where}: {first.get('msg')}")

    @app.exception_handler(HRMError)
    async def unavailable(request: Request, error: HRMError) -> JSONResponse:
        return answer(HTTPStatus.SERVICE_UNAVAILABLE, str(error))


def _score(loaded: LoadedVersion, body: bytes) -> np.ndarray:
    inputs = parse_inputs(body)
    try:
        return loaded.model.decide(*(inputs[name] for name in INPUT_NAMES))
    except ValueError as error:
        raise HTTPException(HTTPStatus.BAD_REQUEST, str(error)) from error


def parse_inputs(body: bytes) -> dict[str, np.ndarray]:
    """The named input tensors from a scoring request (``inputs`` or ``instances``)."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HTTPException(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}") from error
    except RecursionError as error:
        raise HTTPException(HTTPStatus.BAD_REQUEST, "the body's JSON is nested too deeply") from error
    usage = (
        'send {"inputs": {"strategic": [...], "tactical": [...], "cap": [...], "held": [...], '
        '"benchmark": [...]}} or {"instances": [{"strategic": ..., "tactical": ..., "cap": ..., '
        '"held": ..., "benchmark": ...}]}'
    )
    try:
        parsed = ScoringRequest.model_validate(request)
    except (ValidationError, RecursionError) as error:
        raise HTTPException(HTTPStatus.BAD_REQUEST, f"{usage} ({_first_error(error)})") from error
    if parsed.inputs is not None:
        columns = parsed.inputs.model_dump()
    elif parsed.instances:
        columns = {name: [getattr(row, name) for row in parsed.instances] for name in INPUT_NAMES}
    else:
        raise HTTPException(HTTPStatus.BAD_REQUEST, usage)
    missing = [name for name in INPUT_NAMES if columns.get(name) is None or None in columns[name]]
    if missing:
        raise HTTPException(
            HTTPStatus.BAD_REQUEST, f"missing input {missing[0]!r}; inputs: {', '.join(INPUT_NAMES)}"
        )
    arrays = {}
    for name in INPUT_NAMES:
        try:
            arrays[name] = np.asarray(columns[name], dtype=np.float32)
        except (TypeError, ValueError, RecursionError) as error:
            raise HTTPException(
                HTTPStatus.BAD_REQUEST, f"{name}: not a rectangular array of numbers ({error})"
            ) from error
    return arrays


def _first_error(error: Exception) -> str:
    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return "nested too deeply" if isinstance(error, RecursionError) else str(error)


class DeclaredSizeLimit:
    """Refuses a body declared larger than ``MAX_BODY_BYTES`` before reading any of it, with the
    JSON error every other refusal has (FastAPI's own limit, for bodies sent without a length,
    answers in plain text)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
                message = f"a body of {declared.decode(errors='replace')} bytes; at most {MAX_BODY_BYTES}"
                status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
                response = JSONResponse({"error_code": status.phrase, "message": message}, status_code=status)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_config(app: FastAPI, host: str, port: int, token: str | None) -> uvicorn.Config:
    """uvicorn's settings: the bind (refused beyond loopback without a token), connection limits
    and timeouts."""
    if not is_loopback(host) and not token:
        raise HRMError(
            f"serve --host {host}: refusing to serve beyond this machine without a token; set "
            f"{TOKEN_ENV} (clients then send Authorization: Bearer <token>) or bind 127.0.0.1"
        )
    return uvicorn.Config(
        DeclaredSizeLimit(app),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=64 * 1024,
    )


def serve(
    tracking: MlflowResource,
    warehouse: DuckDBResource,
    alias: str,
    host: str,
    port: int,
    poll_seconds: float = 2.0,
    paper_account: Path | None = None,
) -> None:
    """Serve until interrupted."""
    token = os.environ.get(TOKEN_ENV) or None
    state = ServerState(tracking, warehouse, alias, poll_seconds, paper_account)
    config = server_config(create_app(state, token), host, port, token)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(MAX_CONNECTIONS)  # clients that connect before uvicorn starts wait in the backlog
    loaded = state.snapshot.loaded
    auth = "; Bearer token required, docs off" if token else "; OpenAPI docs at /docs"
    print(
        f"serving {loaded.label} (version {loaded.version}) on http://{host}:{sock.getsockname()[1]} "
        f"({ROUTES}); following the alias every {poll_seconds:g} s{auth}; Ctrl-C stops",
        flush=True,
    )
    uvicorn.Server(config).run(sockets=[sock])
