"""Raw snapshots under ``data/raw`` and their DVC versioning.

``data/`` at the project root is tracked by ``data.dvc``. Versioning runs ``dvc add`` (which
re-hashes the folder, so a ``data.dvc`` naming a cache entry this machine lacks is harmless) and
pushes to the configured remote. The remote is written to ``.dvc/config.local`` so that a local
path never ends up in the tracked ``.dvc/config``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from hrm_core.errors import HRMError


@dataclass(frozen=True)
class DatasetVersion:
    md5: str
    files: int
    size: int
    remote: str


def snapshot_path(data_dir: Path, symbol: str) -> Path:
    """Where the raw snapshot of ``symbol`` lives."""
    return data_dir / "raw" / f"{symbol}.parquet"


def write_snapshot(frame: pd.DataFrame, path: Path) -> None:
    """Write a raw snapshot atomically (temp file, then rename), sorted for stable bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.sort_values(["ts", "source_file", "source_row"]).to_parquet(tmp, index=False)
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


def version_data(project_dir: Path, remote_url: str, data_dir: str = "data") -> DatasetVersion:
    """``dvc add`` the data folder and push it to ``remote_url``; return the new version."""
    project_dir = Path(project_dir)
    if not (project_dir / data_dir).is_dir():
        raise HRMError(f"{project_dir / data_dir}: nothing to version (no raw snapshots yet)")
    if not (project_dir / ".dvc").is_dir():
        _dvc(project_dir, "init", *(() if (project_dir / ".git").exists() else ("--no-scm",)))
    if not remote_url.startswith(("s3://", "gs://", "azure://", "http")):
        Path(remote_url).mkdir(parents=True, exist_ok=True)
    _dvc(project_dir, "remote", "add", "--local", "--force", "--default", "hrm", remote_url)
    _dvc(project_dir, "add", "--quiet", data_dir)
    _dvc(project_dir, "push", "--quiet", "--remote", "hrm", f"{data_dir}.dvc")
    out = yaml.safe_load((project_dir / f"{data_dir}.dvc").read_text())["outs"][0]
    return DatasetVersion(
        md5=out["md5"], files=int(out.get("nfiles", 0)), size=int(out.get("size", 0)), remote=remote_url
    )
