-- Regime (strategic): the ratio of short to long realised volatility, and a regime code read
-- from it and from trend strength: 2 volatile (short-term volatility 1.5× the long-term),
-- 1 trending (|trend strength| ≥ 0.5), 0 ranging.
CREATE OR REPLACE TEMP TABLE f_regime AS
SELECT
    v.symbol,
    v.n,
    CASE WHEN v.n >= 100 THEN coalesce(v.l_vol_20 / nullif(v.h_vol_100, 0), 1) END AS h_vol_ratio_20_100,
    CASE
        WHEN v.n < 100 THEN NULL
        WHEN coalesce(v.l_vol_20 / nullif(v.h_vol_100, 0), 1) > 1.5 THEN 2
        WHEN abs(t.h_trend_strength_50) >= 0.5 THEN 1
        ELSE 0
    END AS h_regime
FROM f_volatility AS v
JOIN f_trend AS t USING (symbol, n);
