-- The feature rows of one batch of symbols: one row per bar, features prefixed h_ (strategic),
-- l_ (tactical) and s_ (shared); the builder appends them to the feature table. Columns are
-- listed by the registry test, which keeps registry and table equal.
CREATE OR REPLACE TEMP VIEW hierarchical_batch AS
SELECT
    bars.symbol,
    bars.ts,
    f_trend.* EXCLUDE (symbol, n),
    f_momentum.* EXCLUDE (symbol, n),
    f_volatility.* EXCLUDE (symbol, n),
    f_volume.* EXCLUDE (symbol, n),
    f_calendar.* EXCLUDE (symbol, n),
    f_regime.* EXCLUDE (symbol, n)
FROM bars
JOIN f_trend USING (symbol, n)
JOIN f_momentum USING (symbol, n)
JOIN f_volatility USING (symbol, n)
JOIN f_volume USING (symbol, n)
JOIN f_calendar USING (symbol, n)
JOIN f_regime USING (symbol, n);
