-- Labels for bar t: decisions at t fill at t+1's open, so every forward return is measured from
-- open[t+1]: fwd_ret_h = ln(open[t+1+h] / open[t+1]). Labels look ahead by design; features never.
-- Task tags read the realised path over the next tag_horizon bars, scaled by the volatility
-- known at t (20-bar std of log returns, σ·√H):
--   adverse         whipsaw (range > 3σ√H with efficiency < 0.3) or future volatility > 2σ
--   breakout        close beyond the prior 20-bar high/low, then a move onward > 0.5σ√H
--   trend           |move| > σ√H with path efficiency ≥ 0.5
--   mean_reversion  close stretched |z20| > 1, then a move back > 0.5σ√H
--   none            everything else (first match wins, in this order).
-- The forward_returns placeholder expands to one ln(lead(open, 1 + h) OVER w / lead(open, 1) OVER w) per horizon.
CREATE OR REPLACE TABLE labels.forward AS
WITH bars AS (
    SELECT *, ln(close / lag(close) OVER (PARTITION BY symbol ORDER BY ts)) AS log_ret
    FROM source_bars
),
paths AS (
    SELECT
        symbol,
        ts,
        close,
        {forward_returns},
        lead(ts, {longest_exit}) OVER w                                  AS label_end_ts,
        ln(lead(open, {tag_exit}) OVER w / lead(open, 1) OVER w)          AS move,
        sum(abs(log_ret)) OVER (w ROWS BETWEEN 1 FOLLOWING AND {tag_horizon} FOLLOWING) AS path_length,
        count(log_ret) OVER (w ROWS BETWEEN 1 FOLLOWING AND {tag_horizon} FOLLOWING)    AS path_bars,
        stddev_samp(log_ret) OVER (w ROWS BETWEEN 1 FOLLOWING AND {tag_horizon} FOLLOWING) AS future_vol,
        ln(max(high) OVER (w ROWS BETWEEN 1 FOLLOWING AND {tag_horizon} FOLLOWING)
           / min(low) OVER (w ROWS BETWEEN 1 FOLLOWING AND {tag_horizon} FOLLOWING)) AS future_range,
        stddev_samp(log_ret) OVER (w ROWS 19 PRECEDING)                  AS vol_20,
        (close - avg(close) OVER (w ROWS 19 PRECEDING))
            / nullif(stddev_pop(close) OVER (w ROWS 19 PRECEDING), 0)    AS z_20,
        max(high) OVER (w ROWS BETWEEN 20 PRECEDING AND 1 PRECEDING)     AS prior_high_20,
        min(low) OVER (w ROWS BETWEEN 20 PRECEDING AND 1 PRECEDING)      AS prior_low_20,
        row_number() OVER w - 1                                          AS n
    FROM bars
    WINDOW w AS (PARTITION BY symbol ORDER BY ts)
),
scaled AS (
    SELECT
        *,
        vol_20 * sqrt({tag_horizon}) AS scale,
        abs(move) / nullif(path_length, 0) AS efficiency
    FROM paths
)
SELECT
    symbol,
    ts,
    {forward_columns},
    label_end_ts,
    CASE
        WHEN move IS NULL OR path_bars < {tag_horizon} OR n < 20 OR vol_20 IS NULL OR vol_20 = 0 THEN NULL
        WHEN (future_range > 3 * scale AND coalesce(efficiency, 0) < 0.3) OR future_vol > 2 * vol_20
            THEN 'adverse'
        WHEN (close > prior_high_20 AND move > 0.5 * scale) OR (close < prior_low_20 AND move < -0.5 * scale)
            THEN 'breakout'
        WHEN abs(move) > scale AND efficiency >= 0.5 THEN 'trend'
        WHEN abs(z_20) > 1 AND sign(move) = -sign(z_20) AND abs(move) > 0.5 * scale THEN 'mean_reversion'
        ELSE 'none'
    END AS task
FROM scaled;
