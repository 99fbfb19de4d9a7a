"""The NautilusTrader adapter (optional extra ``nautilus``): a registered version trading in
Nautilus' backtest engine ends every bar with the equity our engine gives it on the same bars, to
within what Nautilus' rounding of each fill explains.

The tolerance is measured, not guessed. Set up as ``pipelines/nautilus.py`` describes (fills at the
next open, proportional slippage, commission × traded value), Nautilus differs from our engine only
in its rounding: every fill's cash flow and commission are booked in whole cents (USD's precision),
at most a cent a fill together, and prices and quantities carry 6 decimals (at most ~1e-6 × a
share's price a fill). The bound below is that, fill by fill; the differences measured on the
sample were 0.01–0.04 USD on 100,000 (≤ 4.1e-7 relative) against bounds of 0.25–0.67 USD. What
the bound rules out: Nautilus' default timing (a market order sent from ``on_bar`` fills at that
bar's close) differed by up to 1,650 USD (1.8%), and its default fill model (no slippage) by up to
124 USD (0.13%).

Both runs of each symbol trade the version as registered (a volatility-targeted benchmark: long
only on these bars) and, so that shorts and flips are exercised, with a flat benchmark (the tilt
alone). A flip is one fill in our engine and two orders in Nautilus' cash account, so Nautilus
fills once more per flip.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest

from assets.serving import load_version
from hrm_core.core.config import HRMConfig
from hrm_core.dataset.market import MarketData, read_market_data
from hrm_core.model.serving import LoadedVersion
from hrm_core.sim.backtest import run_version
from tests.test_serving import served  # noqa: F401  (the fixture: a tiny version 1 under production)

pytest.importorskip("nautilus_trader")

from pipelines.nautilus import PRICE_PRECISION, nautilus_backtest

pytestmark = pytest.mark.slow
BARS = 60
CENT = 0.01  # Nautilus books a fill's cash flow and its commission in cents: ≤ half a cent each


def compare(loaded: LoadedVersion, data: MarketData, config: HRMConfig, symbol: str) -> dict:
    """Both equity curves of ``symbol`` over the test part, their differences and fill counts."""
    theirs = nautilus_backtest(loaded, data, config, symbol, "test")
    run = run_version(loaded.model, data, config, symbol, "test")
    initial = config.trading.initial_capital
    ours = pd.concat(
        [pd.Series([initial], index=run.positions.index[:1]), (1 + run.returns).cumprod() * initial]
    )
    assert theirs.index.equals(ours.index)
    shares = run.positions.to_numpy()
    gap = (theirs - ours).abs()
    return {
        "gap": float(gap.max()),
        "relative": float((gap / ours).max()),
        "fills": theirs.attrs["fills"],
        "our_fills": int((np.diff(shares, prepend=0.0) != 0).sum()),
        "flips": int((shares[1:] * shares[:-1] < 0).sum()),
        "shorts": int((shares < 0).sum()),
    }


def test_nautilus_equity_follows_our_engine_on_the_same_bars(served):  # noqa: F811
    loaded = load_version(served["resources"]["tracking"], "production")
    config = loaded.config
    normalization = {k: tuple(v) for k, v in loaded.meta["normalization"].items()}
    with duckdb.connect(served["resources"]["warehouse"].database, read_only=True) as con:
        (start,) = con.execute(
            "SELECT DISTINCT ts FROM features.hierarchical ORDER BY ts DESC LIMIT 1 OFFSET ?",
            [BARS],
        ).fetchone()
        data = read_market_data(
            con, config, normalization, f"CASE WHEN f.ts >= TIMESTAMP '{start}' THEN 'test' END"
        )
    flat = config.model_copy(update={"policy": config.policy.model_copy(update={"benchmark": "flat"})})
    per_fill = CENT + 10.0**-PRICE_PRECISION * float(data.high.max())
    shorts = flips = 0
    for name, variant in (("registered", config), ("flat benchmark", flat)):
        for symbol in data.symbols:
            got = compare(loaded, data, variant, symbol)
            print(f"{name} {symbol}: {got}, bound {per_fill * got['fills']:.4f}")
            assert got["fills"] == got["our_fills"] + got["flips"] and got["our_fills"] > 0
            assert got["gap"] <= per_fill * got["fills"]
            shorts, flips = shorts + got["shorts"], flips + got["flips"]
    assert shorts > 0 and flips > 0  # the short side and the two-order flip were exercised
