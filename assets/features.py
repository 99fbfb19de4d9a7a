"""``hierarchical_features``: strategic (h_), tactical (l_) and shared (s_) features in DuckDB."""

import random

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.ingest import WAREHOUSE_POOL
from assets.resources import HRMSettings, connect
from assets.versioning import dataset_version
from hrm_core.core.feature_registry import FEATURES
from hrm_core.features.build import READS, TABLE, WRITES, update_features
from hrm_core.features.quality import nonfinite_counts, point_in_time_difference

POINT_IN_TIME_TOLERANCE = 1e-9


@dg.asset(deps=[dataset_version], pool=WAREHOUSE_POOL, group_name="features", kinds={"duckdb", "numba"})
def hierarchical_features(warehouse: DuckDBResource) -> dg.MaterializeResult:
    """``features.hierarchical``: every registered feature for every clean bar (``hrm_core.features``:
    numba kernels over DuckDB). Only what changed is computed: new bars of symbols whose earlier
    bars are unchanged, and changed or new symbols whole; in one transaction."""
    with connect(warehouse, READS, WRITES) as con:
        update = update_features(con)
        rows = update.rows
        symbols = con.execute("SELECT count(DISTINCT symbol) FROM features.hierarchical").fetchone()[0]
    levels = {level: sum(f.level == level for f in FEATURES) for level in ("strategic", "tactical", "shared")}
    registry = "\n".join(
        ["| feature | group | lookback | TA-Lib | meaning |", "|---|---|---|---|---|"]
        + [f"| {f.name} | {f.group} | {f.lookback} | {f.talib or ''} | {f.description} |" for f in FEATURES]
    )
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "symbols": symbols,
            "build": "full" if update.full else "incremental",
            "rows_computed": rows if update.full else update.appended,
            "symbols_rebuilt": len(update.rebuilt),
            "feature_count": len(FEATURES),
            "features_per_level": dg.MetadataValue.json(levels),
            "registry": dg.MetadataValue.md(registry),
        }
    )


@dg.asset_check(asset=hierarchical_features, blocking=True)
def features_finite(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    """Every feature is finite from its lookback on (NULL only during warm-up)."""
    with connect(warehouse, [TABLE]) as con:
        bad = {name: n for name, n in nonfinite_counts(con).items() if n}
    return dg.AssetCheckResult(passed=not bad, metadata={"nonfinite_rows": dg.MetadataValue.json(bad)})


@dg.asset_check(asset=hierarchical_features, blocking=True)
def features_point_in_time(settings: HRMSettings, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    """Rebuilding from bars up to a random cut gives the same features up to the cut: no look-ahead."""
    rng = random.Random(settings.config().seed)
    with connect(warehouse, [*READS, TABLE]) as con:
        symbols = [r[0] for r in con.execute("SELECT DISTINCT symbol FROM clean.ohlcv ORDER BY 1").fetchall()]
        symbol = rng.choice(symbols)
        stamps = [
            r[0]
            for r in con.execute(
                "SELECT ts FROM clean.ohlcv WHERE symbol = ? ORDER BY ts", [symbol]
            ).fetchall()
        ]
        cut = stamps[rng.randrange(len(stamps) // 2, len(stamps))]
        difference = point_in_time_difference(con, symbol, cut)
    return dg.AssetCheckResult(
        passed=difference <= POINT_IN_TIME_TOLERANCE,
        metadata={"symbol": symbol, "cut_ts": str(cut), "max_relative_difference": difference},
    )
