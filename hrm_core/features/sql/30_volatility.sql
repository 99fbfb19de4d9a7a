-- Volatility: TA-Lib's ATR(20) (Wilder average of the true range, seeded with the mean of the
-- first 20 true ranges) and BBANDS(20, 2σ population), Bollinger %b, width and squeeze flag,
-- realised volatility of log returns, drawdown from the 200-bar high, and the bar's own shape.
CREATE OR REPLACE TEMP TABLE f_volatility AS
WITH ranges AS (
    SELECT
        *,
        CASE WHEN n >= 1 THEN greatest(high - low, abs(high - prev_close), abs(low - prev_close)) END
            AS true_range
    FROM bars
),
windows AS (
    SELECT
        *,
        avg(close) OVER (w ROWS 19 PRECEDING)           AS mean_20,
        stddev_pop(close) OVER (w ROWS 19 PRECEDING)    AS sd_20,
        stddev_samp(log_ret) OVER (w ROWS 19 PRECEDING) AS vol_20,
        stddev_samp(log_ret) OVER (w ROWS 99 PRECEDING) AS vol_100,
        max(close) OVER (w ROWS 199 PRECEDING)          AS max_200
    FROM ranges
    WINDOW w AS (PARTITION BY symbol ORDER BY n)
),
bands AS (
    SELECT
        *,
        CASE WHEN n >= 20 THEN seeded_smoothing(true_range, 19 / 20, 20, 20, n) END AS atr_20,
        CASE WHEN n >= 19 THEN mean_20 + 2 * sd_20 END AS upper_20,
        CASE WHEN n >= 19 THEN mean_20 END             AS middle_20,
        CASE WHEN n >= 19 THEN mean_20 - 2 * sd_20 END AS lower_20,
        CASE WHEN n >= 19 THEN 4 * sd_20 / mean_20 END AS width_20
    FROM windows
)
SELECT
    symbol,
    n,
    atr_20                                                        AS h_atr_20,
    atr_20 / close                                                AS h_atr_20_pct,
    upper_20                                                      AS l_bbands_upper_20,
    middle_20                                                     AS l_bbands_middle_20,
    lower_20                                                      AS l_bbands_lower_20,
    CASE WHEN n >= 19 THEN coalesce((close - lower_20) / nullif(upper_20 - lower_20, 0), 0.5) END
                                                                  AS l_bb_pctb_20,
    width_20                                                      AS l_bb_width_20,
    CASE WHEN n >= 118 THEN
        (width_20 <= 1.1 * min(width_20) OVER (PARTITION BY symbol ORDER BY n ROWS 99 PRECEDING))::INTEGER
    END                                                           AS l_bb_squeeze,
    CASE WHEN n >= 20 THEN vol_20 END                             AS l_vol_20,
    CASE WHEN n >= 100 THEN vol_100 END                           AS h_vol_100,
    CASE WHEN n >= 199 THEN close / max_200 - 1 END               AS h_drawdown_200,
    (high - low) / close                                          AS l_range,
    (close - open) / open                                         AS l_body,
    open / prev_close - 1                                         AS l_gap
FROM bands;
