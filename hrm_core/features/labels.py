"""Forward-return labels at the deep-supervision horizons and multi-task tags (``labels.sql``)."""

from __future__ import annotations

from importlib.resources import files

import duckdb

from hrm_core.core.config import LabelConfig
from hrm_core.data.warehouse import transaction

SQL_DIR = files("hrm_core.features") / "sql"

TASKS = ("trend", "mean_reversion", "breakout", "adverse", "none")


def label_columns(horizons: list[int]) -> list[str]:
    """Names of the forward-return columns, one per horizon."""
    return [f"fwd_ret_{h}" for h in horizons]


def build_labels(con: duckdb.DuckDBPyConnection, config: LabelConfig, source: str = "clean.ohlcv") -> int:
    """Write ``labels.forward`` from the bars in ``source``; return its row count."""
    forward = ",\n        ".join(
        f"ln(lead(open, {1 + h}) OVER w / lead(open, 1) OVER w) AS fwd_ret_{h}" for h in config.horizons
    )
    sql = (
        (SQL_DIR / "labels.sql")
        .read_text()
        .format(
            forward_returns=forward,
            forward_columns=", ".join(label_columns(config.horizons)),
            longest_exit=1 + max(config.horizons),
            tag_exit=1 + config.tag_horizon,
            tag_horizon=config.tag_horizon,
        )
    )
    with transaction(con):
        con.execute("CREATE SCHEMA IF NOT EXISTS labels")
        con.execute(f"CREATE OR REPLACE TEMP VIEW source_bars AS SELECT * FROM {source}")
        con.execute(sql)
        return con.execute("SELECT count(*) FROM labels.forward").fetchone()[0]
