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
        avg(close) OVER (w ROWS 11 PRECEDING)         AS mean_12,
        avg(close) OVER (w ROWS 25 PRECEDING)         AS mean_26,
        avg(greatest(close - prev_close, 0)) OVER (w ROWS 13 PRECEDING) AS mean_gain_14,
        avg(greatest(prev_close - close, 0)) OVER (w ROWS 13 PRECEDING) AS mean_loss_14,
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
        linear_recurrence(
            CASE WHEN n = 11 THEN mean_12 WHEN n > 11 THEN close * 2 / 13 ELSE 0 END, 11 / 13, n
        ) AS ema_12_all,
        linear_recurrence(
            CASE WHEN n = 25 THEN mean_26 WHEN n > 25 THEN close * 2 / 27 ELSE 0 END, 25 / 27, n
        ) AS ema_26_all,
        linear_recurrence(
            CASE WHEN n = 25 THEN mean_12 WHEN n > 25 THEN close * 2 / 13 ELSE 0 END, 11 / 13, n
        ) AS macd_fast_all,
        linear_recurrence(
            CASE WHEN n = 14 THEN mean_gain_14 WHEN n > 14 THEN gain / 14 ELSE 0 END, 13 / 14, n
        ) AS avg_gain_all,
        linear_recurrence(
            CASE WHEN n = 14 THEN mean_loss_14 WHEN n > 14 THEN loss / 14 ELSE 0 END, 13 / 14, n
        ) AS avg_loss_all
    FROM windows
),
macd_line AS (
    SELECT
        *,
        macd_fast_all - ema_26_all AS macd_all,
        avg(macd_fast_all - ema_26_all) OVER (PARTITION BY symbol ORDER BY n ROWS 8 PRECEDING)
            AS mean_macd_9
    FROM smoothed
),
signal AS (
    SELECT
        *,
        linear_recurrence(
            CASE WHEN n = 33 THEN mean_macd_9 WHEN n > 33 THEN macd_all * 2 / 10 ELSE 0 END, 8 / 10, n
        ) AS signal_all
    FROM macd_line
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
