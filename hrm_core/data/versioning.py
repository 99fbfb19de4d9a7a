"""Raw snapshots under ``<repo>/data/raw`` and their DVC versioning.

The DVC repository is a folder of the state (``HRM_HOME`` locally), never the checkout: runs with
different homes or sources must not share snapshots, and a run must not change tracked files.
Versioning runs ``dvc add data`` and pushes to the configured remote; the md5 of ``data/`` is the
dataset version a model records, and :func:`restore_data` brings that exact folder back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from hrm_core.core.errors import HRMError


@dataclass(frozen=True)
class DatasetVersion:
    md5: str
    files: int
    size: int
    remote: str


def snapshot_path(data_dir: Path, symbol: str) -> Path:
    """Where the raw snapshot of ``symbol`` lives (symbols are checked by the readers' naming
    rule; this refuses, again, any name that would leave the folder)."""
    folder = data_dir / "raw"
    path = folder / f"{symbol}.parquet"
    if path.parent != folder or symbol in ("", ".", ".."):
        raise HRMError(f"symbol {symbol!r}: a snapshot name must not leave {folder}")
    return path


def snapshot_symbols(data_dir: Path) -> list[str]:
    """The symbols that have a raw snapshot."""
    return sorted(p.stem for p in (data_dir / "raw").glob("*.parquet"))


def write_snapshots(frame: pd.DataFrame, data_dir: Path) -> None:
    """Write each symbol's raw snapshot, atomically (temp file, then rename), sorted for stable bytes.

    One pass for the whole batch: the rows are sorted once (by symbol, time, file and line) and
    converted to Arrow once, and each symbol's file is a slice of that table. Sorting and
    converting symbol by symbol took longer than writing 1,000 files. One file per symbol stays the
    layout: runs that ingest different symbols in parallel never write the same file.
    """
    order = np.lexsort(
        (
            frame["source_row"].to_numpy(),
            pd.factorize(frame["source_file"], sort=True)[0],
            np.where(frame["ts"].isna(), np.iinfo("int64").max, frame["ts"].array.asi8),  # missing last
            pd.factorize(frame["symbol"], sort=True)[0],
        )
    )
    rows = frame if (order[1:] > order[:-1]).all() else frame.take(order)  # often in order already
    table = pa.Table.from_pandas(rows, preserve_index=False)
    symbols, starts = np.unique(rows["symbol"].to_numpy(), return_index=True)
    for symbol, start, end in zip(symbols, starts, [*starts[1:], len(rows)], strict=True):
        path = snapshot_path(data_dir, str(symbol))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table.slice(start, end - start), tmp)
        os.replace(tmp, path)


def _dvc(project_dir: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project_dir, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise HRMError(
            f"dvc {' '.join(args)} failed in {project_dir}: {detail[-1] if detail else proc.returncode}"
        )
    return proc.stdout


def _init_repo(repo_dir: Path, remote_url: str, endpoint_url: str | None = None) -> None:
    """A DVC repository without git in ``repo_dir``, whose default remote is ``remote_url`` (on
    the S3-compatible server ``endpoint_url`` when given; credentials come from the environment)."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    if not (repo_dir / ".dvc").is_dir():
        _dvc(repo_dir, "init", "--no-scm")
    if not remote_url.startswith(("s3://", "gs://", "azure://", "http")):
        Path(remote_url).mkdir(parents=True, exist_ok=True)
    _dvc(repo_dir, "remote", "add", "--local", "--force", "--default", "hrm", remote_url)
    if endpoint_url and remote_url.startswith("s3://"):
        _dvc(repo_dir, "remote", "modify", "--local", "hrm", "endpointurl", endpoint_url)


def version_data(repo_dir: Path, remote_url: str, endpoint_url: str | None = None) -> DatasetVersion:
    """``dvc add`` the repository's ``data`` folder and push it to ``remote_url``; return the new
    version."""
    repo_dir = Path(repo_dir)
    if not (repo_dir / "data").is_dir():
        raise HRMError(f"{repo_dir / 'data'}: nothing to version (no raw snapshots yet)")
    _init_repo(repo_dir, remote_url, endpoint_url)
    _dvc(repo_dir, "add", "--quiet", "data")
    _dvc(repo_dir, "push", "--quiet", "--remote", "hrm", "data.dvc")
    out = yaml.safe_load((repo_dir / "data.dvc").read_text())["outs"][0]
    return DatasetVersion(
        md5=out["md5"], files=int(out.get("nfiles", 0)), size=int(out.get("size", 0)), remote=remote_url
    )


def restore_data(md5: str, remote_url: str, target: Path, endpoint_url: str | None = None) -> Path:
    """Bring the dataset version ``md5`` back from ``remote_url`` into ``target/data``; return it.

    ``target`` becomes a small DVC repository of its own whose ``data.dvc`` names that version, so
    the restored folder is exactly what was versioned, byte for byte.
    """
    target = Path(target)
    if (target / "data").exists():
        raise HRMError(f"{target / 'data'} exists; restore into an empty folder, e.g. --to restored-data")
    _init_repo(target, remote_url, endpoint_url)
    pointer = {"outs": [{"md5": md5, "path": "data", "hash": "md5"}]}
    (target / "data.dvc").write_text(yaml.safe_dump(pointer))
    _dvc(target, "pull", "--quiet", "--remote", "hrm", "data.dvc")
    return target / "data"
