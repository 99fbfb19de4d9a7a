"""``hrm-trading predict``: the registered model's decision for the latest bar of each symbol.

The model is loaded from the registry (``models:/hrm-trader@<alias>``) as the pickle-free
exported program, and fed the same windows it was trained on: the warehouse's features normalised
with the statistics stored in the model's metadata, the sizing cap of the model's trading rules at
that bar, and no position held, which is the state a fresh deployment decides from.
"""

import os
import sys
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import torch
import yaml
from dagster_duckdb import DuckDBResource

from assets.resources import HRMSettings, LakeWarehouse, MlflowResource, warehouse_exists
from hrm_core.config import TradingConfig
from hrm_core.data.market import read_market_data
from hrm_core.errors import HRMError
from hrm_core.model.exposure import exposure_cap
from hrm_core.vocabulary import ACTIONS

PICKLE_RULE = "served models are torch.export programs (model.pt2) and never pickles"


def load_served_program(uri: str) -> torch.nn.Module:
    """The registered ``torch.export`` program, refusing anything that would unpickle or import
    code shipped with the model (a planted pickle would otherwise run its payload here). The
    files are checked before any of them is deserialised."""
    local = Path(mlflow.artifacts.download_artifacts(uri))
    flavor = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {}).get("pytorch") or {}
    data = local / str(flavor.get("model_data", ""))
    if flavor.get("code") or not (data / "model.pt2").is_file() or (data / "model.pth").exists():
        held = sorted(p.name for p in data.iterdir()) if data.is_dir() else [data.name]
        raise HRMError(f"{uri}: refused to load (rule: {PICKLE_RULE}); this version holds {held}")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    return mlflow.pytorch.load_model(str(local), map_location="cpu")


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


def predict(
    tracking: MlflowResource,
    warehouse: DuckDBResource,
    settings: HRMSettings,
    alias: str,
    symbols: list[str] | None,
) -> list[dict]:
    """One decision per symbol (all symbols in the warehouse, or ``symbols``) at its latest bar.
    The warehouse is the profile's, opened like the assets open it (retrying while a run writes)."""
    uri = f"models:/{tracking.model_name}@{alias}"
    tracking.client()
    if tracking.version_with_alias(alias) is None:
        raise HRMError(no_version_message(tracking, alias))
    meta = mlflow.models.get_model_info(uri).metadata
    model = load_served_program(uri)
    config = settings.config()
    if not warehouse_exists(warehouse):
        raise HRMError("the warehouse is empty; run `make run` (full_job) first")
    normalization = {name: tuple(stats) for name, stats in meta["normalization"].items()}
    with _reading(warehouse) as con:
        data = read_market_data(con, config, normalization, "NULL")
    trained_on = (tuple(meta["feature_names"][0]), tuple(meta["feature_names"][1]))
    if trained_on != (data.strategic_names, data.tactical_names):
        raise HRMError(
            f"{uri}: the model reads features {trained_on}, the config gives "
            f"{(data.strategic_names, data.tactical_names)}; use the config the model was trained with"
        )
    high, low = meta["high_level_lookback"], meta["low_level_lookback"]
    wanted = symbols or data.symbols
    unknown = sorted(set(wanted) - set(data.symbols))
    if unknown:
        raise HRMError(f"predict: unknown symbol {unknown[0]!r}; the warehouse has {', '.join(data.symbols)}")
    rows = np.array([np.flatnonzero(data.symbol_id == data.symbols.index(s))[-1] for s in wanted])
    strategic, tactical = data.windows(rows, high, low)  # refused if a window leaves its symbol
    trading = TradingConfig.model_validate(meta["trading"])
    cap = exposure_cap(
        torch.from_numpy(data.close[rows]), torch.from_numpy(np.nan_to_num(data.atr[rows])), trading
    )
    with torch.no_grad():
        decision = model(
            torch.from_numpy(strategic),
            torch.from_numpy(tactical),
            cap.float(),
            torch.zeros(len(rows)),
        ).numpy()
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
                "model": f"{tracking.model_name}@{alias}",
            }
        )
    return results
