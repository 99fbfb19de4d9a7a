"""The feature definitions as numba kernels: one pass per symbol over its bars, in parallel over
symbols.

Why kernels and not SQL windows: the recurrences (EMA, MACD, Wilder's RSI and ATR) cannot be SQL
windows, and expressing them as windowed sums of powers made the DuckDB build 2.5x slower than a
plain pandas + TA-Lib script. Here each recurrence is TA-Lib's own update, and each rolling
statistic is summed over its window directly, so a bar's value depends on its window alone (never
on where the computation started): a build that resumes from a saved recurrence state
(``STATE_COLUMNS``) writes exactly the values of a full rebuild. DuckDB stays the engine and the
store: it reads the bars and writes the table (``build.py``); the calendar features stay SQL.

Every column is NaN until its lookback is met (``registry.FEATURES``), and NaN is stored as NULL.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from hrm_core.core.feature_registry import FEATURES

KERNEL_COLUMNS = tuple(f.name for f in FEATURES if f.group != "calendar")
"""The columns the kernels compute, in table order (the calendar columns are SQL expressions)."""
_C = {name: i for i, name in enumerate(KERNEL_COLUMNS)}
(H_SMA_50, H_SMA_100, H_SMA_200, H_SMA_50_RATIO, H_SMA_100_RATIO, H_SMA_200_RATIO, H_SMA_50_200_SPREAD,
 H_TREND_STRENGTH_50, H_RET_100, H_ZSCORE_100) = (_C[n] for n in KERNEL_COLUMNS[:10])  # fmt: skip
L_EMA_12, L_EMA_26, L_MACD, L_MACD_SIGNAL, L_MACD_HIST, L_RSI_14, L_MOM_5 = (
    _C[n] for n in ("l_ema_12", "l_ema_26", "l_macd", "l_macd_signal", "l_macd_hist", "l_rsi_14", "l_mom_5")
)
L_EMA_12_RATIO, L_MACD_NORM, L_MACD_SIGNAL_NORM, L_MACD_HIST_NORM, L_RSI_14_NORM, L_MOM_5_PCT = (
    _C[n]
    for n in (
        "l_ema_12_ratio",
        "l_macd_norm",
        "l_macd_signal_norm",
        "l_macd_hist_norm",
        "l_rsi_14_norm",
        "l_mom_5_pct",
    )
)
S_RET_1, S_RET_5, S_RET_10, S_RET_20 = (_C[f"s_ret_{k}"] for k in (1, 5, 10, 20))
H_ATR_20, H_ATR_20_PCT = _C["h_atr_20"], _C["h_atr_20_pct"]
L_BB_UPPER, L_BB_MIDDLE, L_BB_LOWER = (_C[f"l_bbands_{b}_20"] for b in ("upper", "middle", "lower"))
L_BB_PCTB, L_BB_WIDTH, L_BB_SQUEEZE = _C["l_bb_pctb_20"], _C["l_bb_width_20"], _C["l_bb_squeeze"]
L_VOL_20, H_VOL_100, H_DRAWDOWN_200 = _C["l_vol_20"], _C["h_vol_100"], _C["h_drawdown_200"]
L_RANGE, L_BODY, L_GAP = _C["l_range"], _C["l_body"], _C["l_gap"]
L_VOLUME_Z_20, L_VOLUME_RATIO_20 = _C["l_volume_z_20"], _C["l_volume_ratio_20"]
H_VOL_RATIO_20_100, H_REGIME = _C["h_vol_ratio_20_100"], _C["h_regime"]

STATE_COLUMNS = ("ema_12", "ema_26", "macd_fast", "macd_signal", "avg_gain", "avg_loss", "atr_20")
"""The recurrences' values at a symbol's last bar: what a build needs to continue the symbol."""
EMA_12, EMA_26, MACD_FAST, MACD_SIGNAL, AVG_GAIN, AVG_LOSS, ATR_20 = range(len(STATE_COLUMNS))
RESET = 256
"""Bars between direct recomputations of the sliding sums, counted in the symbol's bar numbers."""
HISTORY_BARS = RESET + max(feature.lookback for feature in FEATURES) + 1
"""Bars before the first new one that a continued build reads: back to the last reset, and the
longest window reaching back from there (the registry's longest lookback and the bar itself: the
200-bar mean and extremes)."""
FLAT = 1e-13
"""A window whose squared deviations sum to less than this share of their scale is checked
directly: a flat window's spread is exactly 0 (as SQL's is), not rounding noise."""

# TA-Lib's seeding: a recurrence's first value is the mean of its first ``period`` inputs.
EMA_12_SEED, EMA_26_SEED, MACD_SEED, SIGNAL_SEED, RSI_SEED, ATR_SEED = 11, 25, 25, 33, 14, 20
VOLATILE_RATIO, TRENDING_STRENGTH = 1.5, 0.5
REGIME_RANGING, REGIME_TRENDING, REGIME_VOLATILE = 0.0, 1.0, 2.0
NAN = math.nan


@numba.njit(cache=True)
def _sum(x: np.ndarray, start: int, stop: int) -> float:
    """x[start:stop] summed in four interleaved running sums, combined in a fixed order: four times
    the throughput of one chain of additions, and, unlike a vectoriser's order, the same result
    wherever the window lies in memory (so a continued build equals a full one bit for bit)."""
    a0 = a1 = a2 = a3 = 0.0
    j = start
    while j + 4 <= stop:
        a0 += x[j]
        a1 += x[j + 1]
        a2 += x[j + 2]
        a3 += x[j + 3]
        j += 4
    while j < stop:
        a0 += x[j]
        j += 1
    return (a0 + a1) + (a2 + a3)


@numba.njit(cache=True)
def _mean(x: np.ndarray, end: int, window: int) -> float:
    """Mean of the ``window`` values ending at ``end``."""
    return _sum(x, end - window + 1, end + 1) / window


@numba.njit(cache=True)
def _flat(x: np.ndarray, end: int, window: int) -> bool:
    """Whether the window's values are all equal (its spread is exactly 0, as SQL's is)."""
    first = x[end - window + 1]
    for j in range(end - window + 2, end + 1):  # noqa: SIM110 (numba compiles no generators)
        if x[j] != first:
            return False
    return True


@numba.njit(cache=True)
def _std(x: np.ndarray, end: int, window: int, ddof: int) -> float:
    """Standard deviation (``ddof`` 0: population, 1: sample) of the window, two-pass; exactly 0
    for a flat window."""
    if _flat(x, end, window):
        return 0.0
    mean = _mean(x, end, window)
    a0 = a1 = a2 = a3 = 0.0
    j = end - window + 1
    while j + 4 <= end + 1:
        a0 += (x[j] - mean) ** 2
        a1 += (x[j + 1] - mean) ** 2
        a2 += (x[j + 2] - mean) ** 2
        a3 += (x[j + 3] - mean) ** 2
        j += 4
    while j <= end:
        a0 += (x[j] - mean) ** 2
        j += 1
    return math.sqrt(((a0 + a1) + (a2 + a3)) / (window - ddof))


@numba.njit(cache=True)
def _moments(x: np.ndarray, window: int, first_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bar, the mean and the sum of squared deviations (m2) of the ``window`` values ending
    there (NaN until the window is full): sums of deviations from the value at the last reset,
    slid one bar at a time and recomputed directly at every reset (``RESET``)."""
    m = x.size
    mean, m2 = np.full(m, NAN), np.full(m, NAN)
    shift = s = q = 0.0
    for i in range(m):
        if i == 0 or (first_n + i) % RESET == 0:
            shift, s, q = x[i], 0.0, 0.0
            for j in range(max(0, i - window + 1), i + 1):
                d = x[j] - shift
                s += d
                q += d * d
        else:
            d = x[i] - shift
            s += d
            q += d * d
            if i >= window:
                d = x[i - window] - shift
                s -= d
                q -= d * d
        if i < window - 1:
            continue
        mean[i] = shift + s / window
        m2[i] = q - s * s / window
        if m2[i] <= FLAT * q:  # a flat window, or one too close to flat for the sums
            m2[i] = _std(x, i, window, 0) ** 2 * window
    return mean, m2


@numba.njit(cache=True)
def _extreme(x: np.ndarray, window: int, largest: bool) -> np.ndarray:
    """Per bar, the largest (or smallest) of the ``window`` values ending there, by a monotonic
    queue of indices (exact: it only compares)."""
    m = x.size
    out = np.full(m, NAN)
    queue = np.empty(m, np.int64)
    head = tail = 0
    for i in range(m):
        while tail > head and (x[queue[tail - 1]] <= x[i] if largest else x[queue[tail - 1]] >= x[i]):
            tail -= 1
        queue[tail] = i
        tail += 1
        if queue[head] <= i - window:
            head += 1
        if i >= window - 1:
            out[i] = x[queue[head]]
    return out


@numba.njit(cache=True)
def _trend_strength(y: np.ndarray, window: int, first_n: int) -> np.ndarray:
    """Per bar, corr(y, bar) · |corr| over the ``window`` bars ending there (R² of the regression
    of y on time, signed by its slope); 0 for a flat window. Sliding sums of d = y − shift, of d²
    and of k·d (k: the bar's place in the window), recomputed at every reset."""
    m = y.size
    out = np.full(m, NAN)
    mean_k = (window - 1) / 2.0
    var_k = window * (window * window - 1) / 12.0  # Σ (k − mean_k)²
    shift = s = q = t = 0.0
    for i in range(window - 1, m):
        if i == window - 1 or (first_n + i) % RESET == 0:
            shift, s, q, t = y[i], 0.0, 0.0, 0.0
            for k in range(window):
                d = y[i - window + 1 + k] - shift
                s += d
                q += d * d
                t += k * d
        else:
            gone, new = y[i - window] - shift, y[i] - shift
            t = t - (s - gone) + (window - 1) * new  # every other bar's place moves down by one
            s += new - gone
            q += new * new - gone * gone
        m2 = q - s * s / window
        if m2 <= FLAT * q:
            out[i] = _direct_trend_strength(y, i, window)
            continue
        corr = (t - mean_k * s) / math.sqrt(m2 * var_k)
        out[i] = corr * abs(corr)
    return out


@numba.njit(cache=True)
def _direct_trend_strength(y: np.ndarray, end: int, window: int) -> float:
    """``_trend_strength`` of one window, two-pass (for flat or nearly flat windows)."""
    if _flat(y, end, window):
        return 0.0
    mean_y = _mean(y, end, window)
    mean_k = (window - 1) / 2.0
    cov = var_y = 0.0
    for k in range(window):
        dy = y[end - window + 1 + k] - mean_y
        cov += dy * (k - mean_k)
        var_y += dy * dy
    corr = cov / math.sqrt(var_y * window * (window * window - 1) / 12.0)
    return corr * abs(corr)


@numba.njit(cache=True)
def _seed_or_step(x: np.ndarray, i: int, n: int, seed: int, period: int, previous: float, k: float) -> float:
    """One bar of TA-Lib's seeded EMA (``k`` = 2 / (period + 1)) or Wilder average (``k`` = 1 /
    period): NaN before bar ``seed``, the mean of the ``period`` inputs ending there at it, then
    ``previous + k · (x − previous)``."""
    if n < seed:
        return NAN
    if n == seed:
        return _mean(x, i, period)
    return previous + k * (x[i] - previous)


@numba.njit(cache=True)
def _wilder(x: np.ndarray, i: int, n: int, seed: int, period: int, previous: float) -> float:
    """TA-Lib's Wilder average, in its own arithmetic: (previous · (period − 1) + x) / period."""
    if n < seed:
        return NAN
    if n == seed:
        return _mean(x, i, period)
    return (previous * (period - 1) + x[i]) / period


@numba.njit(cache=True)
def symbol_features(o, h, lo, c, v, first_n, out_from, state, out) -> None:
    """The kernel columns of one symbol's bars, rows ``out_from`` onwards into ``out``.

    ``o h lo c v`` hold the symbol's bars from its bar ``first_n``; rows before ``out_from`` are
    history for the windows. ``state`` [len(STATE_COLUMNS)] holds the recurrences at the bar
    before ``out_from`` (NaN where a recurrence has not started) and is left at the last bar."""
    m = c.size
    log_close = np.log(c)
    log_ret = np.full(m, NAN)
    gain = np.zeros(m)
    loss = np.zeros(m)
    true_range = np.full(m, NAN)
    log_volume = np.log1p(v)
    for i in range(1, m):
        log_ret[i] = log_close[i] - log_close[i - 1]
        gain[i] = max(c[i] - c[i - 1], 0.0)
        loss[i] = max(c[i - 1] - c[i], 0.0)
        true_range[i] = max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1]))
    log_ret_sums = log_ret.copy()
    log_ret_sums[0] = 0.0  # no return before the first bar read; windows that hold it are masked
    mean_20, m2_20 = _moments(c, 20, first_n)
    mean_50, _ = _moments(c, 50, first_n)
    mean_100, m2_100 = _moments(c, 100, first_n)
    mean_200, _ = _moments(c, 200, first_n)
    max_200 = _extreme(c, 200, True)
    trend_50 = _trend_strength(log_close, 50, first_n)
    _, ret_m2_20 = _moments(log_ret_sums, 20, first_n)
    _, ret_m2_100 = _moments(log_ret_sums, 100, first_n)
    mean_log_volume, log_volume_m2 = _moments(log_volume, 20, first_n)
    mean_volume, _ = _moments(v, 20, first_n)
    width = 4.0 * np.sqrt(m2_20 / 20.0) / mean_20
    min_width_100 = _extreme(width, 100, False)
    # the MACD line from its seed on, for the signal's seed (its first 9 values)
    macd = np.full(m, NAN)
    for i in range(out_from, m):
        n = first_n + i
        row = out[i - out_from]
        row[:] = NAN
        # trend
        if n >= 49:
            row[H_SMA_50] = mean_50[i]
            row[H_SMA_50_RATIO] = c[i] / mean_50[i] - 1.0
            row[H_TREND_STRENGTH_50] = trend_50[i]
        if n >= 99:
            sd_100 = math.sqrt(m2_100[i] / 100.0)
            row[H_SMA_100] = mean_100[i]
            row[H_SMA_100_RATIO] = c[i] / mean_100[i] - 1.0
            row[H_ZSCORE_100] = (c[i] - mean_100[i]) / sd_100 if sd_100 != 0.0 else 0.0
        if n >= 199:
            row[H_SMA_200] = mean_200[i]
            row[H_SMA_200_RATIO] = c[i] / mean_200[i] - 1.0
            row[H_SMA_50_200_SPREAD] = mean_50[i] / mean_200[i] - 1.0
            row[H_DRAWDOWN_200] = c[i] / max_200[i] - 1.0
        if n >= 100:
            row[H_RET_100] = log_close[i] - log_close[i - 100]
        # momentum: TA-Lib's EMA(12), EMA(26), MACD(12, 26, 9) and RSI(14) recurrences
        state[EMA_12] = _seed_or_step(c, i, n, EMA_12_SEED, 12, state[EMA_12], 2.0 / 13.0)
        state[EMA_26] = _seed_or_step(c, i, n, EMA_26_SEED, 26, state[EMA_26], 2.0 / 27.0)
        state[MACD_FAST] = _seed_or_step(c, i, n, MACD_SEED, 12, state[MACD_FAST], 2.0 / 13.0)
        macd[i] = state[MACD_FAST] - state[EMA_26]
        state[MACD_SIGNAL] = _seed_or_step(macd, i, n, SIGNAL_SEED, 9, state[MACD_SIGNAL], 2.0 / 10.0)
        state[AVG_GAIN] = _wilder(gain, i, n, RSI_SEED, 14, state[AVG_GAIN])
        state[AVG_LOSS] = _wilder(loss, i, n, RSI_SEED, 14, state[AVG_LOSS])
        if n >= EMA_12_SEED:
            row[L_EMA_12] = state[EMA_12]
            row[L_EMA_12_RATIO] = c[i] / state[EMA_12] - 1.0
        if n >= EMA_26_SEED:
            row[L_EMA_26] = state[EMA_26]
        if n >= SIGNAL_SEED:
            row[L_MACD] = macd[i]
            row[L_MACD_SIGNAL] = state[MACD_SIGNAL]
            row[L_MACD_HIST] = macd[i] - state[MACD_SIGNAL]
            row[L_MACD_NORM] = macd[i] / c[i]
            row[L_MACD_SIGNAL_NORM] = state[MACD_SIGNAL] / c[i]
            row[L_MACD_HIST_NORM] = (macd[i] - state[MACD_SIGNAL]) / c[i]
        if n >= RSI_SEED:
            moves = state[AVG_GAIN] + state[AVG_LOSS]
            rsi = 0.0 if abs(moves) < 1e-8 else 100.0 * state[AVG_GAIN] / moves
            row[L_RSI_14] = rsi
            row[L_RSI_14_NORM] = rsi / 50.0 - 1.0
        for lag, column in ((1, S_RET_1), (5, S_RET_5), (10, S_RET_10), (20, S_RET_20)):
            if n >= lag:
                row[column] = log_close[i] - log_close[i - lag]
        if n >= 5:
            row[L_MOM_5] = c[i] - c[i - 5]
            row[L_MOM_5_PCT] = c[i] / c[i - 5] - 1.0
        # volatility: TA-Lib's ATR(20) and BBANDS(20, 2), realised volatility, the bar's shape
        state[ATR_20] = _wilder(true_range, i, n, ATR_SEED, 20, state[ATR_20])
        if n >= ATR_SEED:
            row[H_ATR_20] = state[ATR_20]
            row[H_ATR_20_PCT] = state[ATR_20] / c[i]
        if n >= 19:
            middle = mean_20[i]
            spread = 2.0 * math.sqrt(m2_20[i] / 20.0)
            upper, lower = middle + spread, middle - spread
            row[L_BB_UPPER], row[L_BB_MIDDLE], row[L_BB_LOWER] = upper, middle, lower
            row[L_BB_PCTB] = (c[i] - lower) / (upper - lower) if upper != lower else 0.5
            row[L_BB_WIDTH] = width[i]
            sd_log_volume = math.sqrt(log_volume_m2[i] / 19.0)
            row[L_VOLUME_Z_20] = (
                (log_volume[i] - mean_log_volume[i]) / sd_log_volume if sd_log_volume != 0.0 else 0.0
            )
            row[L_VOLUME_RATIO_20] = v[i] / mean_volume[i] if mean_volume[i] != 0.0 else 1.0
        if n >= 118:
            row[L_BB_SQUEEZE] = 1.0 if width[i] <= 1.1 * min_width_100[i] else 0.0
        if n >= 20:
            row[L_VOL_20] = math.sqrt(ret_m2_20[i] / 19.0)
        if n >= 100:
            row[H_VOL_100] = math.sqrt(ret_m2_100[i] / 99.0)
            ratio = row[L_VOL_20] / row[H_VOL_100] if row[H_VOL_100] != 0.0 else 1.0
            row[H_VOL_RATIO_20_100] = ratio
            if ratio > VOLATILE_RATIO:
                row[H_REGIME] = REGIME_VOLATILE
            elif abs(row[H_TREND_STRENGTH_50]) >= TRENDING_STRENGTH:
                row[H_REGIME] = REGIME_TRENDING
            else:
                row[H_REGIME] = REGIME_RANGING
        row[L_RANGE] = (h[i] - lo[i]) / c[i]
        row[L_BODY] = (c[i] - o[i]) / o[i]
        if n >= 1:
            row[L_GAP] = o[i] / c[i - 1] - 1.0


@numba.njit(cache=True, parallel=True, nogil=True)
def batch_features(o, h, lo, c, v, starts, first_n, out_from, states, out_starts, out) -> None:
    """``symbol_features`` for every symbol of a batch, in parallel: symbol s holds input rows
    ``starts[s]:starts[s + 1]`` (its first bar being its bar ``first_n[s]``), writes its rows
    ``out_from[s]`` onwards from output row ``out_starts[s]``, and continues from ``states[s]``."""
    for s in numba.prange(starts.size - 1):
        a, b = starts[s], starts[s + 1]
        rows = out[out_starts[s] : out_starts[s + 1]]
        symbol_features(o[a:b], h[a:b], lo[a:b], c[a:b], v[a:b], first_n[s], out_from[s], states[s], rows)
