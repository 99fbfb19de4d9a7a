"""``hrm-trading predict``: the registered model's decision for the latest bar of each symbol.

A version is loaded from the registry (``models:/hrm-trader@<alias>``) as its two served files,
``weights.npz`` and ``spec.json`` (``hrm_core/model/serving.py``). The download is checked before
anything in it is read: a version holding a pickle is refused, and no code stored with a model is
ever run here (a planted model would otherwise run its payload). The model is fed the windows it
was trained on: the warehouse's features normalised with the statistics stored in the model's
metadata, the sizing cap of the model's trading rules at that bar, and no position held, which is
the state a fresh deployment decides from. ``pipelines/server.py`` serves the same over HTTP.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import yaml
from dagster_duckdb import DuckDBResource

from assets.resources import HRMSettings, LakeWarehouse, MlflowResource, warehouse_exists
from hrm_core.config import TradingConfig
from hrm_core.data.market import read_market_data
from hrm_core.errors import HRMError
from hrm_core.model.exposure import exposure_cap
from hrm_core.model.serving import SPEC_FILE, WEIGHTS_FILE, ServedModel
from hrm_core.vocabulary import ACTIONS

PICKLE_RULE = "served models are weights.npz and spec.json read as data, and never pickles"
CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"  # a models-from-code pyfunc: no pickled model
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".pt2", ".joblib", ".ckpt"}


@dataclass(frozen=True)
class LoadedVersion:
    """One registered version, ready to decide."""

    name: str
    alias: str
    version: str
    model: ServedModel
    meta: dict

    @property
    def label(self) -> str:
        return f"{self.name}@{self.alias}"


def load_served_files(uri: str) -> ServedModel:
    """The version's served files, refusing a download that holds anything that would unpickle
    (checked before any file is read)."""
    local = Path(mlflow.artifacts.download_artifacts(uri))
    held = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    flavor = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {}).get("python_function") or {}
    weights, spec = local / "artifacts" / WEIGHTS_FILE, local / "artifacts" / SPEC_FILE
    pickled = [name for name in held if Path(name).suffix in PICKLE_SUFFIXES]
    plain = all(p.is_file() and not p.is_symlink() for p in (weights, spec))
    if pickled or not plain or flavor.get("loader_module") != CODE_MODEL_LOADER:
        raise HRMError(f"{uri}: refused to load (rule: {PICKLE_RULE}); this version holds {held}")
    return ServedModel.load(weights, spec)


def load_version(tracking: MlflowResource, alias: str) -> LoadedVersion:
    """The version that holds ``alias`` now, loaded (or a clear error when none does)."""
    tracking.client()
    version = tracking.version_with_alias(alias)
    if version is None:
        raise HRMError(no_version_message(tracking, alias))
    uri = f"models:/{tracking.model_name}/{version.version}"
    meta = mlflow.models.get_model_info(uri).metadata
    return LoadedVersion(tracking.model_name, alias, str(version.version), load_served_files(uri), meta)


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
        if not isinstance(warehouse, LakeWarehouse):  # the lake has no writer lock
            duckdb.connect(warehouse.database, read_only=True).close()
    except duckdb.IOException:
        print(
            "waiting: a run is writing the warehouse; predict reads it when that write ends", file=sys.stderr
        )
    return warehouse.get_connection()


def latest_decisions(
    loaded: LoadedVersion, warehouse: DuckDBResource, settings: HRMSettings, symbols: list[str] | None
) -> list[dict]:
    """One decision per symbol (all symbols in the warehouse, or ``symbols``) at its latest bar.
    The warehouse is the profile's, opened like the assets open it (retrying while a run writes)."""
    meta = loaded.meta
    config = settings.config()
    if not warehouse_exists(warehouse):
        raise HRMError("the warehouse is empty; run `make run` (full_job) first")
    normalization = {name: tuple(stats) for name, stats in meta["normalization"].items()}
    with _reading(warehouse) as con:
        data = read_market_data(con, config, normalization, "NULL")
    trained_on = (tuple(meta["feature_names"][0]), tuple(meta["feature_names"][1]))
    if trained_on != (data.strategic_names, data.tactical_names):
        raise HRMError(
            f"{loaded.label}: the model reads features {trained_on}, the config gives "
            f"{(data.strategic_names, data.tactical_names)}; use the config the model was trained with"
        )
    wanted = symbols or data.symbols
    unknown = sorted(set(wanted) - set(data.symbols))
    if unknown:
        raise UnknownSymbol(
            f"predict: unknown symbol {unknown[0]!r}; the warehouse has {', '.join(data.symbols)}"
        )
    rows = np.array([np.flatnonzero(data.symbol_id == data.symbols.index(s))[-1] for s in wanted])
    strategic, tactical = data.windows(rows, meta["high_level_lookback"], meta["low_level_lookback"])
    trading = TradingConfig.model_validate(meta["trading"])
    cap = exposure_cap(data.close[rows], np.nan_to_num(data.atr[rows]), trading)
    decision = loaded.model.decide(strategic, tactical, cap, np.zeros(len(rows)))
    results = []
    for symbol, t, row in zip(wanted, rows, decision, strict=True):
        out = dict(zip(meta["output_columns"], row.tolist(), strict=True))
        results.append(
            {
                "symbol": symbol,
                "bar": str(data.ts[t])[:19],
                "close": float(data.close[t]),
                **out,
                "action": ACTIONS[int(out["action"])],
                "segments": int(out["segments"]),
                "model": loaded.label,
                "version": loaded.version,
            }
        )
    return results


class UnknownSymbol(HRMError):
    """A symbol the warehouse does not hold."""


def predict(
    tracking: MlflowResource,
    warehouse: DuckDBResource,
    settings: HRMSettings,
    alias: str,
    symbols: list[str] | None,
) -> list[dict]:
    """The decisions of the version holding ``alias`` for each symbol's latest bar."""
    return latest_decisions(load_version(tracking, alias), warehouse, settings, symbols)
