-- Volume (tactical): z-score of log volume and volume relative to its 20-bar mean.
-- A flat window (zero spread or zero volume, common in index data) scores 0 / 1, not NULL.
CREATE OR REPLACE TEMP TABLE f_volume AS
WITH windows AS (
    SELECT
        symbol,
        n,
        ln(1 + volume)                                        AS log_volume,
        volume,
        avg(ln(1 + volume)) OVER (w ROWS 19 PRECEDING)        AS mean_log_volume_20,
        stddev_samp(ln(1 + volume)) OVER (w ROWS 19 PRECEDING) AS sd_log_volume_20,
        avg(volume) OVER (w ROWS 19 PRECEDING)                AS mean_volume_20
    FROM bars
    WINDOW w AS (PARTITION BY symbol ORDER BY n)
)
SELECT
    symbol,
    n,
    CASE WHEN n >= 19 THEN
        coalesce((log_volume - mean_log_volume_20) / nullif(sd_log_volume_20, 0), 0)
    END AS l_volume_z_20,
    CASE WHEN n >= 19 THEN coalesce(volume / nullif(mean_volume_20, 0), 1) END AS l_volume_ratio_20
FROM windows;
