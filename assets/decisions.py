"""The served model's decisions for each symbol's latest bar, from an open warehouse connection.

Shared by ``hrm-trading predict`` (both its paths) and ``hrm-trading serve``. It imports neither
Dagster nor MLflow nor torch, so that a fresh ``predict`` process that finds its version in the
cache (``served_cache.py``) decides in about a second.
"""

from __future__ import annotations

import duckdb
import numpy as np

from hrm_core.core.vocabulary import ACTIONS
from hrm_core.model.serving import LoadedVersion
from hrm_core.workflows.latest import LatestBars, decide, latest_bars


def decision_rows(loaded: LoadedVersion, bars: LatestBars, symbols: list[str] | None, held) -> list[dict]:
    """One row per symbol (all of ``bars``', or ``symbols``) at its latest bar, for the exposures
    ``held`` there (one number for all, or one per symbol)."""
    wanted = symbols or bars.symbols
    rows = bars.index(wanted)
    decision = decide(loaded, bars, rows, held)
    results = []
    for symbol, i, row, position in zip(
        wanted, rows, decision, np.broadcast_to(np.asarray(held, float), rows.shape), strict=True
    ):
        out = dict(zip(loaded.meta["output_columns"], row.tolist(), strict=True))
        results.append(
            {
                "symbol": symbol,
                "bar": str(bars.ts[i])[:19],
                "close": float(bars.close[i]),
                "held": float(position),
                **out,
                "action": ACTIONS[int(out["action"])],
                "segments": int(out["segments"]),
                "model": loaded.label,
                "version": loaded.version,
                "tilt_deployed": loaded.model.tilt_on,
            }
        )
    return results


def decide_latest(
    loaded: LoadedVersion,
    con: duckdb.DuckDBPyConnection,
    symbols: list[str] | None,
    held: float | list[float] = 0.0,
) -> list[dict]:
    """One decision per symbol (all symbols in the warehouse, or ``symbols``) at its latest bar,
    for the exposure ``held`` (none by default): the windows the model was trained on (features
    normalised with the statistics in its metadata), the sizing cap of its trading rules and its
    benchmark's exposure at that bar."""
    return decision_rows(loaded, latest_bars(con, loaded, symbols), symbols, held)
