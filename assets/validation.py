"""``clean_ohlcv``: the validation rules split raw bars into clean and quarantined rows; Great
Expectations' run over the batch is the check's record."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.ingest import WAREHOUSE_POOL, raw_ohlcv, symbols_partitions
from assets.resources import HRMSettings
from hrm_core.core.config import hrm_home
from hrm_core.core.errors import DataError
from hrm_core.data.validation import ValidationReport, validate_ohlcv
from hrm_core.data.warehouse import ensure_tables, read_bars, replace_symbols, transaction

QUARANTINE_CHECK = "quarantine_share_within_threshold"
SCHEMA_CHECK = "ohlcv_schema"


@dg.asset(
    deps=[raw_ohlcv],
    pool=WAREHOUSE_POOL,
    group_name="data",
    kinds={"duckdb", "great_expectations"},
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset="clean_ohlcv",
            blocking=True,
            description="raw bars have the OHLCV columns with numeric prices",
        ),
        dg.AssetCheckSpec(
            QUARANTINE_CHECK,
            asset="clean_ohlcv",
            blocking=True,
            description="no symbol has more than max_quarantine_share of its rows quarantined",
        ),
    ],
)
def clean_ohlcv(
    context: dg.AssetExecutionContext, settings: HRMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    """Validated bars in ``clean.ohlcv``; rows breaking a rule go to ``quarantine.ohlcv``.

    Covers the symbols that are current partitions of ``raw_ohlcv``. When a blocking check fails
    nothing is written (the warehouse stays as it was) and downstream assets do not run.
    """
    config = settings.config()
    symbols = sorted(context.instance.get_dynamic_partitions(symbols_partitions.name))
    with warehouse.get_connection() as con:
        ensure_tables(con)
        raw = read_bars(con, "raw.ohlcv", symbols)
        try:
            report = validate_ohlcv(raw, config.validation)
        except DataError as error:
            return dg.MaterializeResult(
                metadata={"error": str(error)},
                check_results=[
                    dg.AssetCheckResult(
                        check_name=SCHEMA_CHECK, passed=False, metadata={"error": str(error)}
                    ),
                    dg.AssetCheckResult(
                        check_name=QUARANTINE_CHECK,
                        passed=False,
                        metadata={"error": "not evaluated: schema is wrong"},
                    ),
                ],
            )
        failing = report.failing_symbols(config.validation.max_quarantine_share)
        if not failing:
            with transaction(con):
                replace_symbols(con, "clean.ohlcv", report.clean, symbols)
                replace_symbols(con, "quarantine.ohlcv", report.quarantine, symbols)
    kept = None
    if failing:  # the warehouse stays as it was; the rows that caused it are not lost
        kept = hrm_home() / "reports" / "quarantine" / f"{context.run_id}.parquet"
        kept.parent.mkdir(parents=True, exist_ok=True)
        report.quarantine.to_parquet(kept, index=False)
    return dg.MaterializeResult(
        metadata=_metadata(report, written=not failing),
        check_results=[
            dg.AssetCheckResult(check_name=SCHEMA_CHECK, passed=True),
            _quarantine_check(report, config.validation.max_quarantine_share, kept),
        ],
    )


def _metadata(report: ValidationReport, written: bool) -> dict:
    rows = [
        f"| {r.symbol} | {r.rows_in} | {r.rows_clean} | {r.rows_quarantined} | {r.quarantine_share:.3%} "
        f"| {r.warnings['bar_gaps']} | {r.warnings['return_outliers']} |"
        for r in report.symbols.values()
    ]
    table = "\n".join(
        [
            "| symbol | rows in | clean | quarantined | share | gap warnings | outlier warnings |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    return {
        "rows_in": sum(r.rows_in for r in report.symbols.values()),
        "rows_clean": sum(r.rows_clean for r in report.symbols.values()),
        "rows_quarantined": sum(r.rows_quarantined for r in report.symbols.values()),
        "per_symbol": dg.MetadataValue.md(table),
        "counts": dg.MetadataValue.json(
            {
                r.symbol: {
                    "rows_in": r.rows_in,
                    "rows_clean": r.rows_clean,
                    "rows_quarantined": r.rows_quarantined,
                    "rules": r.rule_counts,
                    "warnings": r.warnings,
                }
                for r in report.symbols.values()
            }
        ),
        "written": written,
    }


def _quarantine_check(report: ValidationReport, max_share: float, kept: Path | None) -> dg.AssetCheckResult:
    failing = report.failing_symbols(max_share)
    return dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=not failing,
        metadata={
            "max_quarantine_share": max_share,
            **({"quarantined_rows_file": str(kept)} if kept else {}),
            "failing_symbols": dg.MetadataValue.json(
                {r.symbol: {"share": round(r.quarantine_share, 6), "rules": r.rule_counts} for r in failing}
            ),
            "examples": dg.MetadataValue.json(
                {r.symbol: r.examples for r in report.symbols.values() if r.examples}
            ),
            "great_expectations": dg.MetadataValue.json(report.expectations),
        },
    )
