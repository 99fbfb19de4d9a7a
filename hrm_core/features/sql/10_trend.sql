-- Trend (strategic): simple moving averages as TA-Lib's SMA, price relative to them, the
-- strength of the 50-bar trend (R² of a log-price regression signed by its slope, which is
-- corr·|corr|; 0 for a flat window), the 100-bar return and z-score of price.
CREATE OR REPLACE TEMP TABLE f_trend AS
WITH windows AS (
    SELECT
        symbol,
        n,
        close,
        avg(close) OVER (w ROWS 49 PRECEDING)                  AS mean_50,
        avg(close) OVER (w ROWS 99 PRECEDING)                  AS mean_100,
        avg(close) OVER (w ROWS 199 PRECEDING)                 AS mean_200,
        stddev_pop(close) OVER (w ROWS 99 PRECEDING)           AS sd_100,
        corr(ln(close), n) OVER (w ROWS 49 PRECEDING)          AS corr_50,
        lag(close, 100) OVER w                                 AS close_100_ago
    FROM bars
    WINDOW w AS (PARTITION BY symbol ORDER BY n)
),
sma AS (
    SELECT
        *,
        CASE WHEN n >= 49 THEN mean_50 END   AS sma_50,
        CASE WHEN n >= 99 THEN mean_100 END  AS sma_100,
        CASE WHEN n >= 199 THEN mean_200 END AS sma_200
    FROM windows
)
SELECT
    symbol,
    n,
    sma_50                                                   AS h_sma_50,
    sma_100                                                  AS h_sma_100,
    sma_200                                                  AS h_sma_200,
    close / sma_50 - 1                                       AS h_sma_50_ratio,
    close / sma_100 - 1                                      AS h_sma_100_ratio,
    close / sma_200 - 1                                      AS h_sma_200_ratio,
    sma_50 / sma_200 - 1                                     AS h_sma_50_200_spread,
    CASE WHEN n >= 49 THEN CASE WHEN isnan(corr_50) THEN 0 ELSE corr_50 * abs(corr_50) END END
                                                             AS h_trend_strength_50,
    ln(close / close_100_ago)                                AS h_ret_100,
    CASE WHEN n >= 99 THEN coalesce((close - mean_100) / nullif(sd_100, 0), 0) END
                                                             AS h_zscore_100
FROM sma;
