"""The served model's decisions for each symbol's latest bar, from an open warehouse connection.

Shared by ``hrm-trading predict`` (both its paths) and ``hrm-trading serve``. It imports neither
Dagster nor MLflow nor torch, so that a fresh ``predict`` process that finds its version in the
cache (``served_cache.py``) decides in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from hrm_core.core.config import HRMConfig, TradingConfig
from hrm_core.core.errors import HRMError
from hrm_core.core.vocabulary import ACTIONS
from hrm_core.dataset.market import read_market_data
from hrm_core.model.exposure import benchmark_exposure, exposure_cap
from hrm_core.model.serving import ServedModel


@dataclass(frozen=True)
class LoadedVersion:
    """One registered version, ready to decide, and the metadata it was logged with."""

    name: str
    alias: str
    version: str
    model: ServedModel
    meta: dict

    @property
    def label(self) -> str:
        return f"{self.name}@{self.alias}"


class UnknownSymbol(HRMError):
    """A symbol the warehouse does not hold."""


def decide_latest(
    loaded: LoadedVersion, con: duckdb.DuckDBPyConnection, config: HRMConfig, symbols: list[str] | None
) -> list[dict]:
    """One decision per symbol (all symbols in the warehouse, or ``symbols``) at its latest bar, with
    no position held: the windows the model was trained on (features normalised with the
    statistics in its metadata), the sizing cap of its trading rules and its benchmark's exposure
    at that bar."""
    meta = loaded.meta
    normalization = {name: tuple(stats) for name, stats in meta["normalization"].items()}
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
    benchmark = benchmark_exposure(data.close, data.symbol_id, loaded.model.policy, trading)[rows]
    decision = loaded.model.decide(strategic, tactical, cap, np.zeros(len(rows)), benchmark)
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
                "tilt_deployed": loaded.model.tilt_on,
            }
        )
    return results
