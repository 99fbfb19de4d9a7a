"""What ``predict`` keeps between processes, so that a fresh one decides in about a second.

Opening the registry costs more than deciding: importing MLflow and Dagster takes about 1.5 s and
opening MLflow's sqlite store another 0.7 s, against 0.4 s for the decision. So each version's
served files are kept under ``HRM_HOME/served/<model>/<version>/`` (a registered version's files
never change), beside the aliases as last read from the registry and the registry's state when
they were read. A later ``predict`` on the local profile trusts them only while the registry file
is in that very state (SQLite's file change counter, which every committed write increments, and
the size and modification time of the file and its journal): any write to the registry, an alias
moving for one, sends it back to MLflow. Other registries (an MLflow server) are always asked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import duckdb

from assets.decisions import decide_latest
from assets.locations import REGISTRY_FILE, SERVED_DIR, WAREHOUSE_FILE
from hrm_core.core.config import hrm_home
from hrm_core.core.vocabulary import REGISTERED_MODEL
from hrm_core.model.serving import SPEC_FILE, WEIGHTS_FILE, LoadedVersion, ServedModel

META_FILE, ALIASES_FILE = "meta.json", "aliases.json"


def registry_state(database: Path) -> str | None:
    """A fingerprint that changes with every committed write to a SQLite file (None if absent)."""
    try:
        with database.open("rb") as f:
            counter = f.read(100)[24:28].hex()  # the header's file change counter
    except FileNotFoundError:
        return None
    stats = []
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-journal")):
        try:
            st = path.stat()
            stats.append(f"{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            stats.append("-")
    return "/".join([counter, *stats])


class ServedCache:
    """Served files per version, and the aliases as of a registry state."""

    def __init__(self, root: Path, registry: Path | None) -> None:
        self.root, self.registry = root, registry

    def state(self) -> str | None:
        """The registry's state now; None when it cannot be fingerprinted (not a local file)."""
        return registry_state(self.registry) if self.registry is not None else None

    def version_for(self, alias: str) -> str | None:
        """The version ``alias`` pointed at, if the registry has not changed since it was read."""
        record = self._aliases()
        state = self.state()
        if state is None or record.get("state") != state:
            return None
        return record["aliases"].get(alias)

    def remember(self, state: str | None, alias: str, version: str) -> None:
        """Record that ``alias`` held ``version`` when the registry was in ``state`` (read before
        the alias was, so a write in between makes the record stale, never wrong)."""
        if state is None:
            return
        record = self._aliases()
        if record.get("state") != state:
            record = {"state": state, "aliases": {}}
        record["aliases"][alias] = version
        self._write(self.root / ALIASES_FILE, json.dumps(record))

    def has(self, version: str) -> bool:
        return (self.root / version / META_FILE).is_file()

    def store(self, version: str, weights: Path, spec: Path, meta: dict) -> None:
        """Keep a version's files (whole or not at all: written beside, then renamed)."""
        if self.has(version):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        shutil.copy(weights, staging / WEIGHTS_FILE)
        shutil.copy(spec, staging / SPEC_FILE)
        (staging / META_FILE).write_text(json.dumps(meta))
        try:
            os.replace(staging, self.root / version)
        except OSError:  # another process stored it first
            shutil.rmtree(staging, ignore_errors=True)

    def load(self, version: str) -> tuple[ServedModel, dict]:
        folder = self.root / version
        model = ServedModel.load(folder / WEIGHTS_FILE, folder / SPEC_FILE)
        return model, json.loads((folder / META_FILE).read_text())

    def _aliases(self) -> dict:
        try:
            return json.loads((self.root / ALIASES_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)


def cached_predict(alias: str, symbols: list[str] | None, held: float = 0.0) -> list[dict] | None:
    """``predict`` on the local profile from the cache alone, or None when the cache cannot answer
    (the registry changed, the version was never loaded, or a run is writing the warehouse): then
    the caller asks the registry."""
    home = hrm_home()
    cache = ServedCache(home / SERVED_DIR / REGISTERED_MODEL, home / REGISTRY_FILE)
    version = cache.version_for(alias)
    if version is None or not cache.has(version):
        return None
    try:
        con = duckdb.connect(str(home / WAREHOUSE_FILE), read_only=True)
    except duckdb.Error:
        return None
    model, meta = cache.load(version)
    loaded = LoadedVersion(REGISTERED_MODEL, alias, version, model, meta)
    with con:
        return decide_latest(loaded, con, symbols, held)
