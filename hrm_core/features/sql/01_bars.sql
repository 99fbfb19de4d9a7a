-- One row per bar with its per-symbol index n and the one-bar quantities every group reads.
-- `source_bars` is a view on clean.ohlcv set up by the builder.
CREATE OR REPLACE TEMP TABLE bars AS
SELECT
    symbol,
    ts,
    open,
    high,
    low,
    close,
    volume,
    row_number() OVER w - 1     AS n,
    lag(close) OVER w           AS prev_close,
    ln(close / lag(close) OVER w) AS log_ret
FROM source_bars
WINDOW w AS (PARTITION BY symbol ORDER BY ts);
