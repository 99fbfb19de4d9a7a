"""A registered version trading in NautilusTrader's backtest engine (the optional extra ``nautilus``):
a second, independent account of what ``hrm_core.sim.backtest.run_version`` computes, so that our
engine's fills, costs and equity can be checked against a venue simulator we did not write.

The strategy decides exactly as ``run_version`` does: the network's outputs on each bar's windows,
the sizing cap and the benchmark's exposure are computed up front (they read the market alone), and
``on_bar`` only adds the account: ``decide_from_heads`` with the exposure the previous decision
chose (0 once flat), then one market order for the change of shares the decided action asks for,
sized from equity at the close as ``engine.decisions.decide`` sizes it.

How Nautilus 1.221 is set up to fill as our engine does (decision at bar t's close, fill at bar
t+1's open, slippage against the trade, commission × traded value + fixed fee):

- Timing. With ``bar_execution`` the venue moves its market through a bar's open, high, low and
  close *before* the strategy sees the bar, so a market order sent from ``on_bar`` fills at that
  bar's close; ``TimeInForce.AT_THE_OPEN`` market orders are refused by its matching engine
  ("not currently supported"). So each bar's open is also sent as a trade tick stamped 1 ns before
  the bar, and orders reach the venue after a 1 ns latency: an order sent at bar t's close arrives
  after it, and the first price the venue then sees is bar t+1's open, where it fills.
- Slippage. Nautilus' own slippage is one price tick with a probability (``prob_slippage``) or
  one tick past exhausted bar volume; ``ProportionalSlippage`` instead quotes unlimited size at the
  best price × (1 ± slippage), our fill price (rounded to the instrument's price precision).
- Costs. ``NotionalFee`` charges commission × fill price × quantity + the fixed fee per fill, as our
  engine does; Nautilus books money at the currency's precision (cents for USD).
- Instrument. Nautilus' ``Equity`` trades whole shares only (size precision 0), which would move
  every position by up to a share; a CFD with no base currency and fractional size is booked like
  an equity in a cash account and trades the shares our engine does.
- Account. A cash account with ``allow_cash_borrowing``, as our engine lets cash go negative when
  a fill at the open costs more than the close it was sized at; the risk engine's pre-trade balance
  checks are bypassed for the same reason. A cash account credits a sell that crosses zero only for
  the part that closes the position, so a flip is sent as two orders (close, then open), each
  paying the fixed fee where our engine's single fill pays it once.

Stops and targets (``exit_rules: atr``) and short borrow are not modelled here and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import numpy as np
import pandas as pd
from nautilus_trader.accounting.factory import AccountFactory
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import FeeModel, FillModel, LatencyModel
from nautilus_trader.config import LoggingConfig, RiskEngineConfig, StrategyConfig
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType, BookOrder, TradeTick
from nautilus_trader.model.enums import (
    AccountType,
    AggressorSide,
    AssetClass,
    BookType,
    OmsType,
    OrderSide,
)
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TradeId, Venue
from nautilus_trader.model.instruments import Cfd, Instrument
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.model.orders import Order
from nautilus_trader.trading.strategy import Strategy

from hrm_core.core.config import HRMConfig, TradingConfig
from hrm_core.core.vocabulary import BUY_LONG, CLOSE_LONG, CLOSE_SHORT, SELL_SHORT
from hrm_core.dataset.market import MarketData
from hrm_core.engine.env import TradingEnv
from hrm_core.model.exposure import benchmark_exposure, exposure_cap
from hrm_core.model.serving import OUTPUT_COLUMNS, LoadedVersion, ServedModel

VENUE = Venue("HRM")
PRICE_PRECISION = 6  # rounds a fill price by at most 5e-7, far below a cent on any share
SIZE_PRECISION = 6  # fractional shares, as our engine trades them
BAR_VOLUME = 1e9  # the data has no volume; fills take liquidity from ProportionalSlippage's book
LATENCY_NS = 1  # an order sent at a close reaches the venue after the close
OPEN_LEAD_NS = 1  # a bar's open is stamped this much before the bar: after the last close's orders arrive
ACTION, POSITION = OUTPUT_COLUMNS.index("action"), OUTPUT_COLUMNS.index("position")


class ProportionalSlippage(FillModel):
    """Fills a market order whole at the best price moved ``slippage`` × price against it: our
    engine's fill price, where Nautilus' own models slip by whole ticks."""

    def __init__(self, slippage: float) -> None:
        super().__init__()
        self.slippage = slippage

    def get_orderbook_for_fill_simulation(
        self, instrument: Instrument, order: Order, best_bid: Price, best_ask: Price
    ) -> OrderBook:
        book = OrderBook(instrument_id=instrument.id, book_type=BookType.L2_MBP)
        bid = instrument.make_price(best_bid.as_double() * (1.0 - self.slippage))
        ask = instrument.make_price(best_ask.as_double() * (1.0 + self.slippage))
        book.add(BookOrder(side=OrderSide.BUY, price=bid, size=order.quantity, order_id=1), 0)
        book.add(BookOrder(side=OrderSide.SELL, price=ask, size=order.quantity, order_id=2), 0)
        return book


class NotionalFee(FeeModel):
    """commission × traded value + a fixed fee per fill (``TradingConfig``), in the quote currency:
    our engine's fee, which Nautilus' maker/taker and fixed models each give only half of."""

    def __init__(self, commission: float, fixed_fee: float) -> None:
        super().__init__()
        self.commission, self.fixed_fee = commission, fixed_fee

    def get_commission(
        self, order: Order, fill_qty: Quantity, fill_px: Price, instrument: Instrument
    ) -> Money:
        fee = fill_qty.as_double() * fill_px.as_double() * self.commission + self.fixed_fee
        return Money(fee, instrument.quote_currency)


@dataclass(frozen=True)
class BarInputs:
    """What each bar's decision reads besides the account, per bar of the run (as ``run_version``
    computes them): the network's raw outputs and segments, the sizing cap, the benchmark's
    exposure; ``ts`` [N] int64 is each bar's stamp in ns, by which ``on_bar`` finds its row."""

    ts: np.ndarray
    raw: np.ndarray
    steps: np.ndarray
    cap: np.ndarray
    benchmark: np.ndarray


class HRMStrategyConfig(StrategyConfig, frozen=True):
    """The instrument and bars traded, and the largest exposure (``trading.max_position_size``)."""

    instrument_id: InstrumentId
    bar_type: BarType
    max_position_size: float


class HRMStrategy(Strategy):
    """A registered version trading one instrument: at each bar's close, the decision for the
    exposure the previous decision chose (0 once flat), and market orders for the shares it moves.
    ``equity`` collects the account's equity at each close (cash + shares × close)."""

    def __init__(self, config: HRMStrategyConfig, model: ServedModel, inputs: BarInputs) -> None:
        super().__init__(config)
        self.model, self.inputs = model, inputs
        self.rows = {int(ts): i for i, ts in enumerate(inputs.ts)}
        self.chosen = np.zeros(1, dtype=np.float32)  # the position the last decision chose
        self.equity: list[float] = []

    def on_start(self) -> None:
        self.subscribe_bars(self.config.bar_type)

    def on_bar(self, bar: Bar) -> None:
        i = self.rows[bar.ts_event]
        close = bar.close.as_double()
        shares = float(self.portfolio.net_position(self.config.instrument_id))
        equity = self.portfolio.account(VENUE).balance_total(USD).as_double() + shares * close
        self.equity.append(equity)
        if i == len(self.rows) - 1:  # the last bar decides nothing (its fill would be past the data)
            return
        held = self.chosen if shares != 0.0 else np.zeros(1, dtype=np.float32)
        inputs = self.inputs
        columns = self.model.decide_from_heads(
            inputs.raw[i : i + 1],
            inputs.steps[i : i + 1],
            inputs.cap[i : i + 1],
            held,
            inputs.benchmark[i : i + 1],
        )
        self.chosen = columns[:, POSITION]
        target = target_shares(
            int(columns[0, ACTION]), float(abs(self.chosen[0])), shares, equity, close, self.config
        )
        if target is None or target == shares:
            return
        if shares != 0.0 and target * shares < 0:  # a flip: close, then open (see the module's notes)
            self.trade(-shares)
            self.trade(target)
        else:
            self.trade(target - shares)

    def trade(self, shares: float) -> None:
        """A market order for ``shares`` (+ buy, − sell), dropped when it rounds to no shares."""
        instrument = self.cache.instrument(self.config.instrument_id)
        quantity = instrument.make_qty(abs(shares))
        if quantity.as_double() > 0.0:
            side = OrderSide.BUY if shares > 0 else OrderSide.SELL
            self.submit_order(self.order_factory.market(self.config.instrument_id, side, quantity))


def target_shares(
    action: int, quantity: float, shares: float, equity: float, close: float, config: HRMStrategyConfig
) -> float | None:
    """The shares the decided action moves to, sized from equity at the close as
    ``engine.decisions.decide`` sizes them; None where it trades nothing (HOLD, or a close that
    does not match the position)."""
    size = min(quantity, config.max_position_size) * equity / close
    if action == BUY_LONG:
        return size
    if action == SELL_SHORT:
        return -size
    if (action == CLOSE_LONG and shares > 0) or (action == CLOSE_SHORT and shares < 0):
        return 0.0
    return None


def bar_inputs(loaded: LoadedVersion, data: MarketData, config: HRMConfig, rows: np.ndarray) -> BarInputs:
    """The market's part of each decision at ``rows``, computed as ``run_version`` computes it."""
    hf = config.hierarchical_features
    raw, steps = loaded.model.heads(*data.windows(rows, hf.high_level_lookback, hf.low_level_lookback))
    return BarInputs(
        ts=pd.DatetimeIndex(data.ts[rows]).as_unit("ns").asi8,
        raw=raw,
        steps=steps,
        cap=np.asarray(exposure_cap(data.close[rows], np.nan_to_num(data.atr[rows]), config.trading)),
        benchmark=benchmark_exposure(data.close, data.symbol_id, config.policy, config.trading)[rows],
    )


def instrument_for(symbol: str) -> Cfd:
    """``symbol`` at the venue: fractional shares quoted in USD with no base currency, so a cash
    account books it as an equity (see the module's notes on ``Equity``)."""
    return Cfd(
        instrument_id=InstrumentId(Symbol(symbol), VENUE),
        raw_symbol=Symbol(symbol),
        asset_class=AssetClass.EQUITY,
        quote_currency=USD,
        price_precision=PRICE_PRECISION,
        size_precision=SIZE_PRECISION,
        price_increment=Price(10.0**-PRICE_PRECISION, PRICE_PRECISION),
        size_increment=Quantity(10.0**-SIZE_PRECISION, SIZE_PRECISION),
        ts_event=0,
        ts_init=0,
        maker_fee=Decimal(0),
        taker_fee=Decimal(0),
    )


def market_data(instrument: Cfd, data: MarketData, rows: np.ndarray) -> tuple[BarType, list]:
    """Daily bars of ``rows`` (stamped at their close) and, 1 ns before each, its open as a trade:
    the price the venue fills the previous close's orders at."""
    bar_type = BarType.from_str(f"{instrument.id}-1-DAY-LAST-EXTERNAL")
    ts = pd.DatetimeIndex(data.ts[rows]).as_unit("ns").asi8
    volume = Quantity(BAR_VOLUME, SIZE_PRECISION)
    price = instrument.make_price
    events: list = []
    for i, (row, stamp) in enumerate(zip(rows, ts, strict=True)):
        opened = int(stamp) - OPEN_LEAD_NS
        open_ = price(data.open[row])
        events.append(
            TradeTick(
                instrument.id, open_, volume, AggressorSide.NO_AGGRESSOR, TradeId(f"open-{i}"), opened, opened
            )
        )
        ohlc = (open_, price(data.high[row]), price(data.low[row]), price(data.close[row]))
        events.append(Bar(bar_type, *ohlc, volume, int(stamp), int(stamp)))
    return bar_type, events


@cache
def allow_cash_borrowing() -> None:
    """Let the venue's cash account go negative. Nautilus 1.221 keeps this per venue name for the
    whole process and refuses a second registration (a second ``add_venue(allow_cash_borrowing=
    True)`` for the same venue raises KeyError), so it is registered once, here."""
    AccountFactory.register_cash_borrowing(VENUE.value)


def check_modelled(trading: TradingConfig) -> None:
    """Refuse the trading rules this adapter does not model, rather than trade without them."""
    if trading.exit_rules != "none" or trading.borrow_rate != 0.0:
        raise ValueError(
            "nautilus_backtest models neither stops and targets (exit_rules: atr) nor short borrow "
            f"(borrow_rate); this config has exit_rules={trading.exit_rules!r}, "
            f"borrow_rate={trading.borrow_rate}"
        )


def nautilus_backtest(
    loaded: LoadedVersion, data: MarketData, config: HRMConfig, symbol: str, part: str
) -> pd.Series:
    """``loaded`` trading ``symbol`` through ``part`` in a Nautilus backtest engine, on the bars
    ``run_version`` trades: the account's equity at each bar's close (indexed by the bars' times),
    with the number of fills in ``attrs["fills"]``."""
    trading = config.trading
    check_modelled(trading)
    rows = TradingEnv(data, config, symbol=symbol, part=part).rows
    instrument = instrument_for(symbol)
    bar_type, events = market_data(instrument, data, rows)
    allow_cash_borrowing()
    engine = BacktestEngine(
        BacktestEngineConfig(
            logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
            risk_engine=RiskEngineConfig(bypass=True),
        )
    )
    try:
        engine.add_venue(
            venue=VENUE,
            oms_type=OmsType.NETTING,
            account_type=AccountType.CASH,
            base_currency=USD,
            starting_balances=[Money(trading.initial_capital, USD)],
            fill_model=ProportionalSlippage(trading.slippage),
            fee_model=NotionalFee(trading.commission, trading.fixed_fee),
            latency_model=LatencyModel(base_latency_nanos=LATENCY_NS),
            bar_execution=True,
            trade_execution=True,
        )
        engine.add_instrument(instrument)
        engine.add_data(events)
        strategy = HRMStrategy(
            HRMStrategyConfig(
                instrument_id=instrument.id, bar_type=bar_type, max_position_size=trading.max_position_size
            ),
            loaded.model,
            bar_inputs(loaded, data, config, rows),
        )
        engine.add_strategy(strategy)
        engine.run()
        equity = pd.Series(strategy.equity, index=pd.DatetimeIndex(data.ts[rows]), name="equity")
        equity.attrs["fills"] = len(engine.trader.generate_fills_report())
        return equity
    finally:
        engine.dispose()
