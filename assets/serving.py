"""``hrm-trading predict``: the registered model's decision for the latest bar of each symbol.

A version is loaded from the registry (``models:/hrm-trader@<alias>``) as its two served files,
``weights.npz`` and ``spec.json`` (``hrm_core/model/serving.py``). The download is checked before
anything in it is read: a version holding a pickle is refused, and no code stored with a model is
ever run here (a planted model would otherwise run its payload). Checked files are kept in the
cache (``served_cache.py``), from which a later ``predict`` decides without opening the registry
while it has not changed. ``decisions.py`` makes the decisions; ``server.py`` serves them over HTTP.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import mlflow
import yaml
from dagster_duckdb import DuckDBResource

from assets.decisions import decide_latest
from assets.locations import SERVED_DIR
from assets.resources import IcebergWarehouse, MlflowResource, warehouse_exists
from assets.served_cache import ServedCache
from hrm_core.core.config import hrm_home
from hrm_core.core.errors import HRMError
from hrm_core.core.vocabulary import ALIAS_PRODUCTION, ALIAS_STAGING
from hrm_core.model.serving import SPEC_FILE, WEIGHTS_FILE, LoadedVersion

PICKLE_RULE = "served models are weights.npz and spec.json read as data, and never pickles"
CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"  # a models-from-code pyfunc: no pickled model
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".pt2", ".joblib", ".ckpt"}


def load_served_files(uri: str) -> Path:
    """Download a version and check it before any of its files is read: it must be a pyfunc from
    code over the two served files, and hold nothing that would unpickle. Returns the folder."""
    local = Path(mlflow.artifacts.download_artifacts(uri))
    held = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    flavor = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {}).get("python_function") or {}
    files = [local / "artifacts" / name for name in (WEIGHTS_FILE, SPEC_FILE)]
    pickled = [name for name in held if Path(name).suffix in PICKLE_SUFFIXES]
    plain = all(p.is_file() and not p.is_symlink() for p in files)
    if pickled or not plain or flavor.get("loader_module") != CODE_MODEL_LOADER:
        raise HRMError(f"{uri}: refused to load (rule: {PICKLE_RULE}); this version holds {held}")
    return local / "artifacts"


def served_cache(tracking: MlflowResource) -> ServedCache:
    """The served files kept under ``HRM_HOME``; aliases are remembered for a local sqlite registry."""
    uri = tracking.tracking_uri
    registry = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    return ServedCache(hrm_home() / SERVED_DIR / tracking.model_name, registry)


def load_version(tracking: MlflowResource, alias: str) -> LoadedVersion:
    """The version that holds ``alias`` now, loaded (or a clear error when none does). Its files are
    downloaded and checked once, then read from the cache."""
    cache = served_cache(tracking)
    state = cache.state()  # before the alias is read: a write in between leaves the record stale
    found = tracking.version_with_alias(alias)
    if found is None:
        raise HRMError(no_version_message(tracking, alias))
    version = str(found.version)
    if not cache.has(version):
        uri = f"models:/{tracking.model_name}/{version}"
        with tracking.active():  # models:/ URIs resolve through the active registry
            folder = load_served_files(uri)
            meta = mlflow.models.get_model_info(uri).metadata
        cache.store(version, folder / WEIGHTS_FILE, folder / SPEC_FILE, meta)
    model, meta = cache.load(version)
    cache.remember(state, alias, version)
    return LoadedVersion(tracking.model_name, alias, version, model, meta)


def warm_served_cache(tracking: MlflowResource) -> None:
    """Load the versions that hold ``staging`` and ``production`` into the cache, so that the first
    ``predict`` after a run needs no registry."""
    for alias in (ALIAS_STAGING, ALIAS_PRODUCTION):
        if tracking.version_with_alias(alias) is not None:
            load_version(tracking, alias)


def no_version_message(tracking: MlflowResource, alias: str) -> str:
    """Why no version holds ``alias``, and what to use instead."""
    base = f"models:/{tracking.model_name}@{alias}: no model version has the alias '{alias}'"
    versions = tracking.client().search_model_versions(f"name = '{tracking.model_name}'")
    if not versions:
        return f"{base}; no model is registered yet: run `make run` (full_job) first"
    latest = max(versions, key=lambda v: int(v.version))
    decision = latest.tags.get("promotion.decision")
    if decision == "rejected":
        reasons = latest.tags.get("promotion.reasons", "")
        return (
            f"{base}: the latest candidate, version {latest.version}, was rejected by the promotion "
            f"policy ({reasons}); to see its decisions anyway: --model-alias staging"
        )
    return f"{base}; the latest registered version is {latest.version}: try --model-alias staging"


def _reading(warehouse: DuckDBResource):
    """The warehouse connection, after saying so when a run is writing it (DuckDB has one writer
    process; the resource retries for about 100 s, then the CLI prints the lock error in one line)."""
    try:
        if not isinstance(warehouse, IcebergWarehouse):  # Iceberg has no writer lock
            duckdb.connect(warehouse.database, read_only=True).close()
    except duckdb.IOException:
        print(
            "waiting: a run is writing the warehouse; predict reads it when that write ends", file=sys.stderr
        )
    return warehouse.get_connection()


def latest_decisions(
    loaded: LoadedVersion, warehouse: DuckDBResource, symbols: list[str] | None, held: float = 0.0
) -> list[dict]:
    """``decide_latest`` on the profile's warehouse, opened like the assets open it (retrying while
    a run writes)."""
    if not warehouse_exists(warehouse):
        raise HRMError("the warehouse is empty; run `make run` (full_job) first")
    with _reading(warehouse) as con:
        return decide_latest(loaded, con, symbols, held)


def predict(
    tracking: MlflowResource,
    warehouse: DuckDBResource,
    alias: str,
    symbols: list[str] | None,
    held: float = 0.0,
) -> list[dict]:
    """The decisions of the version holding ``alias`` for each symbol's latest bar."""
    return latest_decisions(load_version(tracking, alias), warehouse, symbols, held)
