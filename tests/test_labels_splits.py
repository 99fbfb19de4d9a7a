"""Labels measure from the next bar's open; splits are chronological, purged and embargoed."""

import numpy as np
import pandas as pd
import pytest

from hrm_core.core.config import LabelConfig, SplitConfig
from hrm_core.core.errors import HRMError
from hrm_core.features.build import build_features
from hrm_core.features.labels import build_labels
from hrm_core.features.splits import build_splits, check_splits, plan_folds
from tests.conftest import warehouse_with


@pytest.fixture
def labelled(daily_bars):
    con = warehouse_with(daily_bars)
    build_features(con)
    build_labels(con, LabelConfig(horizons=[1, 10, 50]))
    return con


def test_forward_returns_fill_at_the_next_open(labelled, daily_bars):
    labels = labelled.execute("SELECT * FROM labels.forward WHERE symbol = 'S0000' ORDER BY ts").df()
    opens = daily_bars[daily_bars["symbol"] == "S0000"]["open"].to_numpy()
    t = 100
    for h in (1, 10, 50):
        assert labels[f"fwd_ret_{h}"].iloc[t] == pytest.approx(
            np.log(opens[t + 1 + h] / opens[t + 1]), rel=1e-12
        )
        assert labels[f"fwd_ret_{h}"].iloc[len(opens) - 1 - h :].isna().all()
    assert labels["label_end_ts"].iloc[t] == labels["ts"].iloc[t + 51]


def test_task_tags_cover_the_four_tasks(labelled):
    tasks = dict(labelled.execute("SELECT task, count(*) FROM labels.forward GROUP BY 1").fetchall())
    for task in ("trend", "mean_reversion", "breakout", "adverse"):
        assert tasks.get(task, 0) > 0, task


def test_splits_are_purged_embargoed_and_in_time_order(labelled):
    embargo = 51
    features = ["h_sma_50_ratio", "l_rsi_14_norm"]
    folds = build_splits(
        labelled,
        SplitConfig(n_folds=3, test_fraction=0.3, validation_fraction=0.1),
        embargo,
        features,
        warmup=60,
    )
    assert check_splits(labelled, embargo) == []
    for fold in folds:
        assert fold.train[1] < fold.validation[0] < fold.validation[1] < fold.test[0]
    rows = (
        labelled.execute(
            "SELECT r.fold, r.part, max(l.label_end_ts) AS end_label, min(r.ts) AS first "
            "FROM splits.rows r JOIN labels.forward l USING (symbol, ts) GROUP BY 1, 2"
        )
        .df()
        .set_index(["fold", "part"])
    )
    for fold in folds:
        assert rows.loc[(fold.fold, "train"), "end_label"] < fold.validation[0]
        assert rows.loc[(fold.fold, "validation"), "end_label"] < fold.test[0]
    first_train = labelled.execute(
        "SELECT min(n) FROM (SELECT symbol, ts, row_number() OVER (PARTITION BY symbol ORDER BY ts) - 1 AS n "
        "FROM labels.forward) JOIN splits.rows USING (symbol, ts)"
    ).fetchone()[0]
    assert first_train == 60


def test_normalisation_uses_training_rows_only(labelled):
    build_splits(labelled, SplitConfig(n_folds=2), 51, ["s_ret_1"], warmup=60)
    stats = labelled.execute("SELECT mean, std FROM splits.normalization WHERE fold = 0").fetchone()
    train = labelled.execute(
        "SELECT avg(s_ret_1), stddev_pop(s_ret_1) FROM splits.rows r "
        "JOIN features.hierarchical f USING (symbol, ts) WHERE fold = 0 AND part = 'train'"
    ).fetchone()
    everything = labelled.execute("SELECT avg(s_ret_1) FROM features.hierarchical").fetchone()[0]
    assert stats == pytest.approx(train, rel=1e-12)
    assert stats[0] != pytest.approx(everything, rel=1e-6)


def test_check_catches_a_leaking_row(labelled):
    build_splits(labelled, SplitConfig(n_folds=2), 51, ["s_ret_1"], warmup=60)
    labelled.execute(
        "INSERT INTO splits.rows SELECT 0, 'train', symbol, ts FROM splits.rows "
        "WHERE fold = 0 AND part = 'validation' LIMIT 1"
    )
    problems = check_splits(labelled, 51)
    assert any("two parts" in p for p in problems)
    assert any("not purged" in p for p in problems)


def test_too_little_data_for_the_folds_is_a_clear_error():
    timeline = pd.DatetimeIndex(pd.date_range("2020", periods=100, freq="D"))
    with pytest.raises(HRMError, match="cannot hold 4 folds"):
        plan_folds(timeline, SplitConfig(n_folds=4), embargo=101)
