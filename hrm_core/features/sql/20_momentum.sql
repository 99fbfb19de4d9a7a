-- Momentum (tactical): TA-Lib's EMA(12), EMA(26), MACD(12, 26, 9), RSI(14) and MOM(5) with
-- TA-Lib's seeding, their price-free normalisations, and log returns over 1/5/10/20 bars (shared).
-- Seeds as TA-Lib: EMA(p) starts at bar p-1 with the mean of the first p closes; MACD's fast EMA
-- starts at bar 25 (where the slow one does) with the mean of closes 14..25 and its signal at bar
-- 33 with the mean of MACD 25..33; RSI's Wilder averages start at bar 14 with the mean of the
-- first 14 gains and losses.
CREATE OR REPLACE TEMP TABLE f_momentum AS
WITH windows AS (
    SELECT
        symbol,
        n,
        close,
        greatest(close - prev_close, 0)               AS gain,
        greatest(prev_close - close, 0)               AS loss,
        lag(close, 1) OVER w                          AS close_1_ago,
        lag(close, 5) OVER w                          AS close_5_ago,
        lag(close, 10) OVER w                         AS close_10_ago,
        lag(close, 20) OVER w                         AS close_20_ago
    FROM bars
    WINDOW w AS (PARTITION BY symbol ORDER BY n)
),
smoothed AS (
    SELECT
        *,
        seeded_smoothing(close, 11 / 13, 12, 11, n)  AS ema_12_all,
        seeded_smoothing(close, 25 / 27, 26, 25, n)  AS ema_26_all,
        seeded_smoothing(close, 11 / 13, 12, 25, n)  AS macd_fast_all,
        seeded_smoothing(gain, 13 / 14, 14, 14, n)   AS avg_gain_all,
        seeded_smoothing(loss, 13 / 14, 14, 14, n)   AS avg_loss_all
    FROM windows
),
signal AS (
    SELECT
        *,
        macd_fast_all - ema_26_all AS macd_all,
        seeded_smoothing(macd_fast_all - ema_26_all, 8 / 10, 9, 33, n) AS signal_all
    FROM smoothed
),
indicators AS (
    SELECT
        symbol,
        n,
        close,
        close_1_ago,
        close_5_ago,
        close_10_ago,
        close_20_ago,
        CASE WHEN n >= 11 THEN ema_12_all END AS ema_12,
        CASE WHEN n >= 25 THEN ema_26_all END AS ema_26,
        CASE WHEN n >= 33 THEN macd_all END AS macd,
        CASE WHEN n >= 33 THEN signal_all END AS macd_signal,
        CASE
            WHEN n < 14 THEN NULL
            WHEN abs(avg_gain_all + avg_loss_all) < 1e-8 THEN 0
            ELSE 100 * avg_gain_all / (avg_gain_all + avg_loss_all)
        END AS rsi_14
    FROM signal
)
SELECT
    symbol,
    n,
    ema_12                            AS l_ema_12,
    ema_26                            AS l_ema_26,
    macd                              AS l_macd,
    macd_signal                       AS l_macd_signal,
    macd - macd_signal                AS l_macd_hist,
    rsi_14                            AS l_rsi_14,
    close - close_5_ago               AS l_mom_5,
    close / ema_12 - 1                AS l_ema_12_ratio,
    macd / close                      AS l_macd_norm,
    macd_signal / close               AS l_macd_signal_norm,
    (macd - macd_signal) / close      AS l_macd_hist_norm,
    rsi_14 / 50 - 1                   AS l_rsi_14_norm,
    close / close_5_ago - 1           AS l_mom_5_pct,
    ln(close / close_1_ago)           AS s_ret_1,
    ln(close / close_5_ago)           AS s_ret_5,
    ln(close / close_10_ago)          AS s_ret_10,
    ln(close / close_20_ago)          AS s_ret_20
FROM indicators;
