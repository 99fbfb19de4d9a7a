"""``hrm-trading serve``: the registered model over HTTP, following its alias.

MLflow's scoring protocol, so MLflow clients and load balancers work unchanged:
- ``GET /ping``: 200 while a version is loaded (503 when none holds the alias);
- ``POST /invocations`` (``application/json``): ``{"inputs": {"strategic": [...], "tactical": [...],
  "cap": [...], "held": [...], "benchmark": [...]}}`` (named tensors) or
  ``{"instances": [{...}, ...]}`` (one object per sample)
  → ``{"predictions": [[...], ...], "columns": [...], "model": ..., "version": ...}``;
and ``GET /decisions/latest[?symbol=S]``: the rows ``hrm-trading predict --json`` prints.

Every response names the version that answered (``X-Model-Version``). A thread polls the registry
every ``poll_seconds`` and, when the alias has moved, loads the new version and swaps it in whole:
no restart, and no request sees half a model. A bad request gets a 4xx and a message saying what
was wrong; nothing a client sends can stop the server.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
from dagster_duckdb import DuckDBResource

from assets.resources import HRMSettings, MlflowResource
from hrm_core.core.errors import HRMError
from hrm_core.model.serving import INPUT_NAMES, OUTPUT_COLUMNS, LoadedVersion
from hrm_core.workflows.latest import UnknownSymbol
from pipelines.serving import latest_decisions, load_version

MAX_BODY_BYTES = 16 * 2**20
log = logging.getLogger("hrm_trading.serve")


class RequestError(Exception):
    """A client's mistake: the status to answer and what to tell them."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ModelServer(ThreadingHTTPServer):
    """The HTTP server and the version it serves now (``loaded``, swapped whole by ``refresh``)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        tracking: MlflowResource,
        warehouse: DuckDBResource,
        settings: HRMSettings,
        alias: str,
        poll_seconds: float = 2.0,
    ) -> None:
        self.tracking, self.warehouse, self.settings = tracking, warehouse, settings
        self.alias, self.poll_seconds = alias, poll_seconds
        self.loaded: LoadedVersion | None = load_version(tracking, alias)  # fails fast when none
        self.missing = ""
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="alias-poller", daemon=True)
        super().__init__(address, Handler)
        self._poller.start()

    def refresh(self) -> None:
        """Load the version the alias points at now, if it is not the one served."""
        version = self.tracking.version_with_alias(self.alias)
        if version is None:
            if self.loaded is not None:
                log.warning("no version holds the alias %r any more; answering 503", self.alias)
            self.loaded, self.missing = None, f"no model version has the alias '{self.alias}'"
        elif self.loaded is None or str(version.version) != self.loaded.version:
            loaded = load_version(self.tracking, self.alias)
            log.info("%s: now serving version %s", loaded.label, loaded.version)
            self.loaded = loaded

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as error:  # the registry may be briefly unreachable: keep serving
                log.warning("could not check the alias %r: %s", self.alias, error)

    def server_close(self) -> None:
        self._stop.set()
        super().server_close()


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client's requests share one connection
    disable_nagle_algorithm = (
        True  # else a response's header and body wait out the client's delayed ACK (40 ms)
    )

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self.body_read = False
        self._answer(self._post)

    def _get(self, loaded: LoadedVersion) -> object:
        url = urlsplit(self.path)
        if url.path == "/ping":
            return {"status": "ok", "model": loaded.label, "version": loaded.version}
        if url.path == "/decisions/latest":
            symbols = parse_qs(url.query).get("symbol")
            try:
                return latest_decisions(loaded, self.server.warehouse, symbols)
            except UnknownSymbol as error:
                raise RequestError(HTTPStatus.NOT_FOUND, str(error)) from error
        if url.path == "/invocations":
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "POST /invocations with a JSON body")
        raise RequestError(HTTPStatus.NOT_FOUND, f"no such path {url.path!r}: {ROUTES}")

    def _post(self, loaded: LoadedVersion) -> object:
        if urlsplit(self.path).path != "/invocations":
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: {ROUTES}")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {content_type or '(none)'!r}: send application/json",
            )
        inputs = parse_inputs(self._body())
        try:
            decision = loaded.model.decide(*(inputs[name] for name in INPUT_NAMES))
        except ValueError as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from error
        return {
            "predictions": decision.tolist(),
            "columns": list(OUTPUT_COLUMNS),
            "model": loaded.label,
            "version": loaded.version,
        }

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError as error:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length") from error
        if length > MAX_BODY_BYTES:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes; at most {MAX_BODY_BYTES}"
            )
        body = self.rfile.read(length)
        self.body_read = True
        return body

    def _answer(self, route) -> None:
        loaded = self.server.loaded
        try:
            if loaded is None:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, self.server.missing)
            status, payload = HTTPStatus.OK, route(loaded)
        except RequestError as error:
            status, payload = error.status, {"error_code": error.status.phrase, "message": str(error)}
        except HRMError as error:  # the warehouse or the registry is not ready
            status, payload = (
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error_code": "UNAVAILABLE", "message": str(error)},
            )
        except Exception as error:
            log.exception("%s %s failed", self.command, self.path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            payload = {"error_code": "INTERNAL_ERROR", "message": f"{type(error).__name__}: {error}"}
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if loaded is not None:
            self.send_header("X-Model-Version", loaded.version)
        if self.command == "POST" and not self.body_read:  # the unread body would garble the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)


ROUTES = "GET /ping, POST /invocations, GET /decisions/latest[?symbol=S]"


def parse_inputs(body: bytes) -> dict[str, np.ndarray]:
    """The named input tensors from a scoring request (``inputs`` or ``instances``)."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}") from error
    if isinstance(request, dict) and isinstance(request.get("inputs"), dict):
        columns = request["inputs"]
    elif isinstance(request, dict) and isinstance(request.get("instances"), list) and request["instances"]:
        rows = request["instances"]
        if not all(isinstance(row, dict) for row in rows):
            raise RequestError(HTTPStatus.BAD_REQUEST, "each of 'instances' is an object of named inputs")
        columns = {name: [row.get(name) for row in rows] for name in INPUT_NAMES}
    else:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            'send {"inputs": {"strategic": [...], "tactical": [...], "cap": [...], "held": [...], '
            '"benchmark": [...]}} or {"instances": [{"strategic": ..., "tactical": ..., "cap": ..., '
            '"held": ..., "benchmark": ...}]}',
        )
    missing = [name for name in INPUT_NAMES if columns.get(name) is None]
    if missing:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"missing input {missing[0]!r}; inputs: {', '.join(INPUT_NAMES)}"
        )
    arrays = {}
    for name in INPUT_NAMES:
        try:
            arrays[name] = np.asarray(columns[name], dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"{name}: not a rectangular array of numbers ({error})"
            ) from error
    return arrays


def serve(
    tracking: MlflowResource,
    warehouse: DuckDBResource,
    settings: HRMSettings,
    alias: str,
    host: str,
    port: int,
    poll_seconds: float = 2.0,
) -> None:
    """Serve until interrupted."""
    server = ModelServer((host, port), tracking, warehouse, settings, alias, poll_seconds)
    loaded = server.loaded
    print(
        f"serving {loaded.label} (version {loaded.version}) on http://{host}:{server.server_port} "
        f"({ROUTES}); following the alias every {poll_seconds:g} s; Ctrl-C stops",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
