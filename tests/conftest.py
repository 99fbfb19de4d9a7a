"""Shared fixtures: sample and generated bars, a temporary HRM_HOME and project copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import torch

from hrm_core.data.sources import SampleSource
from hrm_core.data.synthetic import random_walk_bars
from hrm_core.data.warehouse import ensure_tables, replace_symbols, transaction

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
# `make test` runs one pytest worker per core (pytest-xdist): each worker, and every process it
# starts, gets one torch / BLAS thread, or the workers oversubscribe the cores
os.environ.setdefault("HRM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["HRM_THREADS"]))
# Hypothesis writes its example database and caches to .hypothesis/ in the working directory,
# which is the checkout under `make test`: point it at a temporary folder instead
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="hrm-hypothesis-"))


CHECKOUT_BEFORE = pytest.StashKey[set[str]]()


def _checkout_changes() -> set[str]:
    """``git status`` of the checkout (empty outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    except OSError:
        return set()
    return set(out.stdout.splitlines()) if out.returncode == 0 else set()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[CHECKOUT_BEFORE] = _checkout_changes()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """State belongs in HRM_HOME and temporary folders: a test run that changed the checkout (an
    ``mlflow.db``, an ``mlruns/`` written to the working directory) fails, naming what it wrote."""
    written = sorted(_checkout_changes() - session.config.stash.get(CHECKOUT_BEFORE, set()))
    if written:
        print(f"\nthe tests changed the checkout: {written}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def sample_bars() -> pd.DataFrame:
    return SampleSource().load()


@pytest.fixture(scope="session")
def daily_bars() -> pd.DataFrame:
    return random_walk_bars(3, 1500, "1D", seed=1)


@pytest.fixture(scope="session")
def hourly_bars() -> pd.DataFrame:
    return random_walk_bars(2, 1200, "1h", seed=2)


def warehouse_with(bars: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse whose ``clean.ohlcv`` holds ``bars``."""
    con = duckdb.connect()
    ensure_tables(con)
    with transaction(con):
        replace_symbols(con, "clean.ohlcv", bars, sorted(bars["symbol"].unique()))
    return con


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway project folder (config preset, empty data/) and HRM_HOME, so tests never touch
    the checkout's tracked ``data.dvc`` or ``data/``."""
    project_dir = tmp_path / "project"
    (project_dir / "configs").mkdir(parents=True)
    for preset in ("hrm_cpu_small.yaml", "hrm_smoke.yaml"):
        shutil.copy(REPO / "configs" / preset, project_dir / "configs")
    home = tmp_path / "hrm_home"
    monkeypatch.setenv("HRM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.chdir(project_dir)
    return project_dir


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write bars as a Yahoo-style CSV (Date, Open, High, Low, Close, Adj Close, Volume)."""
    out = frame.rename(columns=str.title).rename(columns={"Ts": "Date"}).drop(columns=["Symbol"])
    out["Adj Close"] = out["Close"]
    out["Date"] = out["Date"].dt.strftime("%Y-%m-%d")
    path.parent.mkdir(parents=True, exist_ok=True)
    out[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]].to_csv(path, index=False)
    return path
