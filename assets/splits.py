"""``walk_forward_splits``: chronological folds, purged and embargoed, with train-only normalisation."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.ingest import WAREHOUSE_POOL
from assets.labels import training_labels
from assets.resources import HRMSettings
from hrm_core.core.feature_registry import model_columns, model_features
from hrm_core.features.splits import build_splits, check_splits


@dg.asset(deps=[training_labels], pool=WAREHOUSE_POOL, group_name="features", kinds={"duckdb"})
def walk_forward_splits(settings: HRMSettings, warehouse: DuckDBResource) -> dg.MaterializeResult:
    """``splits.rows``, ``splits.folds`` and ``splits.normalization`` (fitted on train only)."""
    config = settings.config()
    hf = config.hierarchical_features
    columns, warmup = model_columns(hf.strategic_indicators, hf.tactical_indicators, hf.high_level_lookback)
    with warehouse.get_connection() as con:
        folds = build_splits(con, config.splits, config.embargo_bars, columns, warmup)
        counts = con.execute("SELECT fold, part, n_rows FROM splits.folds ORDER BY fold, part").fetchall()
    n_rows = {(f, p): n for f, p, n in counts}
    table = "\n".join(
        ["| fold | train | validation | test | rows (train/val/test) |", "|---|---|---|---|---|"]
        + [
            f"| {f.fold} | {f.train[0]:%Y-%m-%d} → {f.train[1]:%Y-%m-%d} "
            f"| {f.validation[0]:%Y-%m-%d} → {f.validation[1]:%Y-%m-%d} "
            f"| {f.test[0]:%Y-%m-%d} → {f.test[1]:%Y-%m-%d} "
            f"| {n_rows[(f.fold, 'train')]} / {n_rows[(f.fold, 'validation')]} / {n_rows[(f.fold, 'test')]} |"
            for f in folds
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "folds": dg.MetadataValue.md(table),
            "fold_dates": dg.MetadataValue.json(
                [
                    {
                        part: [str(getattr(f, part)[0]), str(getattr(f, part)[1])]
                        for part in ("train", "validation", "test")
                    }
                    for f in folds
                ]
            ),
            "embargo_bars": config.embargo_bars,
            "warmup_bars": warmup,
            "model_features": dg.MetadataValue.json(
                model_features(hf.strategic_indicators, hf.tactical_indicators)
            ),
        }
    )


@dg.asset_check(asset=walk_forward_splits, blocking=True)
def splits_purged_and_embargoed(settings: HRMSettings, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    """No row in two parts, no label window reaching into the next part, embargo respected."""
    with warehouse.get_connection() as con:
        problems = check_splits(con, settings.config().embargo_bars)
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})
