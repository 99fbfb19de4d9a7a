"""Every feature the warehouse computes: its name, group, lookback and meaning.

``lookback`` is the number of earlier bars a feature needs: it is NULL for the first ``lookback``
bars of a symbol and finite from then on (the ``features_finite`` check holds the kernels to that).
Raw indicators that TA-Lib also computes keep TA-Lib's name and are tested against it; the model
reads the normalised features, chosen through the config's indicator names (``INDICATORS``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    name: str
    group: str
    lookback: int
    description: str
    talib: str | None = None
    """The TA-Lib call this column equals, e.g. ``SMA(close, 50)``; None when it has no namesake."""

    @property
    def level(self) -> str:
        """``strategic`` (h_), ``tactical`` (l_) or ``shared`` (s_)."""
        return {"h": "strategic", "l": "tactical", "s": "shared"}[self.name[0]]


FEATURES: tuple[Feature, ...] = (
    # trend
    Feature("h_sma_50", "trend", 49, "simple moving average of close, 50 bars", "SMA(close, 50)"),
    Feature("h_sma_100", "trend", 99, "simple moving average of close, 100 bars", "SMA(close, 100)"),
    Feature("h_sma_200", "trend", 199, "simple moving average of close, 200 bars", "SMA(close, 200)"),
    Feature("h_sma_50_ratio", "trend", 49, "close / SMA50 - 1"),
    Feature("h_sma_100_ratio", "trend", 99, "close / SMA100 - 1"),
    Feature("h_sma_200_ratio", "trend", 199, "close / SMA200 - 1"),
    Feature("h_sma_50_200_spread", "trend", 199, "SMA50 / SMA200 - 1 (golden/death cross)"),
    Feature("h_trend_strength_50", "trend", 49, "R² of log close on time over 50 bars, signed by slope"),
    Feature("h_ret_100", "trend", 100, "log return over 100 bars"),
    Feature("h_zscore_100", "trend", 99, "z-score of close in its 100-bar window"),
    # momentum
    Feature("l_ema_12", "momentum", 11, "exponential moving average of close, 12 bars", "EMA(close, 12)"),
    Feature("l_ema_26", "momentum", 25, "exponential moving average of close, 26 bars", "EMA(close, 26)"),
    Feature("l_macd", "momentum", 33, "MACD line (12, 26, 9)", "MACD(close, 12, 26, 9)[0]"),
    Feature("l_macd_signal", "momentum", 33, "MACD signal line", "MACD(close, 12, 26, 9)[1]"),
    Feature("l_macd_hist", "momentum", 33, "MACD histogram", "MACD(close, 12, 26, 9)[2]"),
    Feature("l_rsi_14", "momentum", 14, "relative strength index, 14 bars (Wilder)", "RSI(close, 14)"),
    Feature("l_mom_5", "momentum", 5, "close - close 5 bars ago", "MOM(close, 5)"),
    Feature("l_ema_12_ratio", "momentum", 11, "close / EMA12 - 1"),
    Feature("l_macd_norm", "momentum", 33, "MACD line / close"),
    Feature("l_macd_signal_norm", "momentum", 33, "MACD signal / close"),
    Feature("l_macd_hist_norm", "momentum", 33, "MACD histogram / close"),
    Feature("l_rsi_14_norm", "momentum", 14, "RSI / 50 - 1, in [-1, 1]"),
    Feature("l_mom_5_pct", "momentum", 5, "close / close 5 bars ago - 1"),
    Feature("s_ret_1", "momentum", 1, "log return over 1 bar"),
    Feature("s_ret_5", "momentum", 5, "log return over 5 bars"),
    Feature("s_ret_10", "momentum", 10, "log return over 10 bars"),
    Feature("s_ret_20", "momentum", 20, "log return over 20 bars"),
    # volatility
    Feature(
        "h_atr_20", "volatility", 20, "average true range, 20 bars (Wilder)", "ATR(high, low, close, 20)"
    ),
    Feature("h_atr_20_pct", "volatility", 20, "ATR20 / close"),
    Feature(
        "l_bbands_upper_20",
        "volatility",
        19,
        "upper Bollinger band, 20 bars, 2σ",
        "BBANDS(close, 20, 2, 2)[0]",
    ),
    Feature(
        "l_bbands_middle_20", "volatility", 19, "middle Bollinger band (SMA20)", "BBANDS(close, 20, 2, 2)[1]"
    ),
    Feature(
        "l_bbands_lower_20",
        "volatility",
        19,
        "lower Bollinger band, 20 bars, 2σ",
        "BBANDS(close, 20, 2, 2)[2]",
    ),
    Feature("l_bb_pctb_20", "volatility", 19, "Bollinger %b: position of close between the bands"),
    Feature("l_bb_width_20", "volatility", 19, "Bollinger band width / middle band"),
    Feature("l_bb_squeeze", "volatility", 118, "1 when band width is within 10 % of its 100-bar low"),
    Feature("l_vol_20", "volatility", 20, "realised volatility: std of log returns, 20 bars"),
    Feature("h_vol_100", "volatility", 100, "realised volatility: std of log returns, 100 bars"),
    Feature("h_drawdown_200", "volatility", 199, "close / 200-bar max close - 1"),
    Feature("l_range", "volatility", 0, "intrabar range (high - low) / close"),
    Feature("l_body", "volatility", 0, "bar body (close - open) / open"),
    Feature("l_gap", "volatility", 1, "opening gap open / previous close - 1"),
    # volume
    Feature("l_volume_z_20", "volume", 19, "z-score of log(1 + volume) over 20 bars"),
    Feature("l_volume_ratio_20", "volume", 19, "volume / 20-bar mean volume"),
    # calendar (SQL expressions, build.CALENDAR_SQL)
    Feature("s_dow_sin", "calendar", 0, "day of week on the unit circle (sin)"),
    Feature("s_dow_cos", "calendar", 0, "day of week on the unit circle (cos)"),
    Feature("s_month_sin", "calendar", 0, "month on the unit circle (sin)"),
    Feature("s_month_cos", "calendar", 0, "month on the unit circle (cos)"),
    Feature("s_time_of_day_sin", "calendar", 0, "UTC time of day on the unit circle (sin)"),
    Feature("s_time_of_day_cos", "calendar", 0, "UTC time of day on the unit circle (cos)"),
    # regime
    Feature("h_vol_ratio_20_100", "regime", 100, "short / long realised volatility"),
    Feature("h_regime", "regime", 100, "regime code: 0 ranging, 1 trending, 2 volatile"),
)

BY_NAME = {feature.name: feature for feature in FEATURES}
INTEGER_FEATURES = frozenset({"l_bb_squeeze", "h_regime"})
"""A flag and a code, stored as INTEGER; every other feature is DOUBLE."""

INDICATORS: dict[str, tuple[str, ...]] = {
    # strategic
    "sma_50": ("h_sma_50_ratio",),
    "sma_100": ("h_sma_100_ratio",),
    "sma_200": ("h_sma_200_ratio", "h_sma_50_200_spread"),
    "atr_20": ("h_atr_20_pct",),
    "regime_indicator": ("h_regime", "h_trend_strength_50", "h_vol_ratio_20_100"),
    "volatility_100": ("h_vol_100",),
    "drawdown_200": ("h_drawdown_200",),
    "zscore_100": ("h_zscore_100",),
    "return_100": ("h_ret_100",),
    # tactical
    "rsi_14": ("l_rsi_14_norm",),
    "macd": ("l_macd_norm", "l_macd_signal_norm", "l_macd_hist_norm"),
    "bb_squeeze": ("l_bb_pctb_20", "l_bb_width_20", "l_bb_squeeze"),
    "momentum_5": ("l_mom_5_pct",),
    "ema_12": ("l_ema_12_ratio",),
    "volatility_20": ("l_vol_20",),
    "bar_shape": ("l_range", "l_body", "l_gap"),
    "volume": ("l_volume_z_20", "l_volume_ratio_20"),
}
"""Config indicator names -> the normalised feature columns the model reads for them."""

SHARED_MODEL_FEATURES = tuple(f.name for f in FEATURES if f.level == "shared")
"""Returns and calendar features: every model reads them, whatever indicators are chosen."""


def model_features(strategic: list[str], tactical: list[str]) -> dict[str, list[str]]:
    """The columns the model's H and L inputs read, given the config's indicator names."""
    return {
        "strategic": [col for name in strategic for col in INDICATORS[name]],
        "tactical": [col for name in tactical for col in INDICATORS[name]] + list(SHARED_MODEL_FEATURES),
    }


def model_columns(
    strategic: list[str], tactical: list[str], high_level_lookback: int
) -> tuple[list[str], int]:
    """Every column the model reads, and the warm-up bars before a row can be a decision: the
    longest feature lookback plus the H window."""
    columns = model_features(strategic, tactical)
    flat = columns["strategic"] + columns["tactical"]
    return flat, max_lookback(flat) + high_level_lookback - 1


def max_lookback(columns: list[str]) -> int:
    """The longest lookback among ``columns``: bars before which a row cannot be used."""
    return max(BY_NAME[c].lookback for c in columns)
