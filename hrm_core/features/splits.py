"""Walk-forward splits: chronological folds with purging, an embargo and train-only normalisation.

The common timeline is the sorted set of all bar timestamps. Its last ``test_fraction`` is cut into
``n_folds`` consecutive test blocks. For each fold, validation is the ``validation_fraction`` of
the timeline just before the test block, and training is everything before validation; ``embargo``
timeline bars separate train from validation and validation from test. Purging: a training
(validation) row is kept only if its label window ends before validation (test) starts, so no
label overlaps the data it is judged on. Rows must also be past the feature warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from hrm_core.core.config import SplitConfig
from hrm_core.core.errors import HRMError
from hrm_core.data.warehouse import transaction

PARTS = ("train", "validation", "test")


@dataclass(frozen=True)
class Fold:
    fold: int
    train: tuple[pd.Timestamp, pd.Timestamp]
    validation: tuple[pd.Timestamp, pd.Timestamp]
    test: tuple[pd.Timestamp, pd.Timestamp]


MIN_BLOCK_BARS = 30
"""No train, validation or test block shorter than this: a Sharpe ratio over fewer bars is noise."""


def plan_folds(timeline: pd.DatetimeIndex, config: SplitConfig, embargo: int) -> list[Fold]:
    """Cut the timeline into walk-forward folds (dates only; rows are assigned later)."""
    total = len(timeline)
    test_len = int(total * config.test_fraction) // config.n_folds
    val_len = int(total * config.validation_fraction)
    first_test = total - test_len * config.n_folds
    folds = []
    for k in range(config.n_folds):
        test_start = first_test + k * test_len
        test_end = total - 1 if k == config.n_folds - 1 else test_start + test_len - 1
        val_end = test_start - embargo - 1
        val_start = val_end - val_len + 1
        train_end = val_start - embargo - 1
        if test_len < MIN_BLOCK_BARS or val_len < MIN_BLOCK_BARS or train_end < MIN_BLOCK_BARS:
            raise HRMError(
                f"walk-forward splits: {total} bars cannot hold {config.n_folds} folds with an embargo of "
                f"{embargo} bars (test {test_len}, validation {val_len}, train {max(train_end, 0)} bars; "
                f"rule: every block has at least {MIN_BLOCK_BARS} bars); use fewer folds (splits.n_folds) "
                "or more data"
            )
        folds.append(
            Fold(
                fold=k,
                train=(timeline[0], timeline[train_end]),
                validation=(timeline[val_start], timeline[val_end]),
                test=(timeline[test_start], timeline[test_end]),
            )
        )
    return folds


def build_splits(
    con: duckdb.DuckDBPyConnection, config: SplitConfig, embargo: int, features: list[str], warmup: int
) -> list[Fold]:
    """Write ``splits.folds``, ``splits.rows`` and ``splits.normalization``; return the folds.

    ``warmup`` is the per-symbol bar index before which rows are not used (feature lookbacks plus
    the model's window). Normalisation (mean, std) is fitted on each fold's training rows only.
    """
    timeline = pd.DatetimeIndex(con.execute("SELECT DISTINCT ts FROM labels.forward ORDER BY ts").df()["ts"])
    folds = plan_folds(timeline, config, embargo)
    plan = pd.DataFrame(
        [
            {
                "fold": f.fold,
                "part": part,
                "start_ts": getattr(f, part)[0],
                "end_ts": getattr(f, part)[1],
                "next_start_ts": _next_start(f, part),
            }
            for f in folds
            for part in PARTS
        ]
    )
    stats = ", ".join(
        f"avg({c}) AS mean_{c}, coalesce(nullif(stddev_pop({c}), 0), 1) AS std_{c}" for c in features
    )
    with transaction(con):
        con.execute("CREATE SCHEMA IF NOT EXISTS splits")
        con.register("fold_plan", plan)
        con.execute(
            """
            CREATE OR REPLACE TABLE splits.rows AS
            WITH indexed AS (
                SELECT l.symbol, l.ts, l.label_end_ts,
                       row_number() OVER (PARTITION BY l.symbol ORDER BY l.ts) - 1 AS n
                FROM labels.forward AS l
            )
            SELECT p.fold, p.part, i.symbol, i.ts
            FROM indexed AS i
            JOIN fold_plan AS p ON i.ts BETWEEN p.start_ts AND p.end_ts
            WHERE i.n >= ?
              AND (p.part = 'test' OR i.label_end_ts < p.next_start_ts)
            ORDER BY p.fold, p.part, i.symbol, i.ts
            """,
            [warmup],
        )
        con.execute(
            """
            CREATE OR REPLACE TABLE splits.folds AS
            SELECT p.fold, p.part, p.start_ts, p.end_ts, count(r.ts) AS n_rows
            FROM fold_plan AS p
            LEFT JOIN splits.rows AS r USING (fold, part)
            GROUP BY ALL ORDER BY p.fold, p.part
            """
        )
        wide = con.execute(
            f"""
            SELECT r.fold, {stats}
            FROM splits.rows AS r JOIN features.hierarchical AS f USING (symbol, ts)
            WHERE r.part = 'train' GROUP BY r.fold ORDER BY r.fold
            """
        ).df()
        long = pd.DataFrame(
            [
                {"fold": int(row["fold"]), "feature": c, "mean": row[f"mean_{c}"], "std": row[f"std_{c}"]}
                for _, row in wide.iterrows()
                for c in features
            ]
        )
        con.register("normalization_rows", long)
        con.execute("CREATE OR REPLACE TABLE splits.normalization AS SELECT * FROM normalization_rows")
        con.unregister("normalization_rows")
        con.unregister("fold_plan")
    return folds


def _next_start(fold: Fold, part: str) -> pd.Timestamp | None:
    """The first timestamp of the part after ``part``: labels must end before it (purging)."""
    return {"train": fold.validation[0], "validation": fold.test[0], "test": None}[part]


def check_splits(con: duckdb.DuckDBPyConnection, embargo: int) -> list[str]:
    """Return every violation of the split rules (empty when the splits are sound)."""
    problems = []
    overlap = con.execute(
        """
        SELECT fold, symbol, ts, count(*) FROM splits.rows GROUP BY ALL HAVING count(*) > 1 LIMIT 1
        """
    ).fetchall()
    if overlap:
        problems.append(f"a row is in two parts of one fold: {overlap[0][:3]}")
    leaks = con.execute(
        """
        SELECT r.fold, r.part, r.symbol, r.ts, l.label_end_ts, nxt.start_ts
        FROM splits.rows AS r
        JOIN labels.forward AS l USING (symbol, ts)
        JOIN splits.folds AS nxt ON nxt.fold = r.fold
            AND nxt.part = CASE r.part WHEN 'train' THEN 'validation' ELSE 'test' END
        WHERE r.part <> 'test' AND NOT (l.label_end_ts < nxt.start_ts)
        LIMIT 1
        """
    ).fetchall()
    if leaks:
        problems.append(f"label window overlaps the next part (not purged): {leaks[0]}")
    gaps = con.execute(
        """
        WITH timeline AS (
            SELECT ts, row_number() OVER (ORDER BY ts) AS i FROM (SELECT DISTINCT ts FROM labels.forward)
        ),
        ends AS (
            SELECT f.fold, f.part, s.i AS start_i, e.i AS end_i FROM splits.folds AS f
            JOIN timeline AS s ON s.ts = f.start_ts JOIN timeline AS e ON e.ts = f.end_ts
        )
        SELECT a.fold, a.part, b.start_i - a.end_i - 1 AS gap
        FROM ends AS a JOIN ends AS b ON a.fold = b.fold
            AND b.part = CASE a.part WHEN 'train' THEN 'validation' ELSE 'test' END
        WHERE a.part <> 'test' AND b.start_i - a.end_i - 1 < ?
        """,
        [embargo],
    ).fetchall()
    if gaps:
        problems.append(f"embargo shorter than {embargo} bars: {gaps[0]}")
    return problems
