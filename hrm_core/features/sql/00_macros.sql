-- Linear recurrences y[n] = a * y[n-1] + u[n] per symbol: EMA (a = 1 - 2/(p+1)) and Wilder
-- smoothing (a = 1 - 1/p). SQL windows cannot recurse, but the recurrence unrolls to
-- y[n] = sum_j u[j] * a^(n-j), and terms older than `span / 2` bars weigh less than a^(span/2)
-- ~ 1e-16 of the newest, below double precision. Each partial sum restarts every `span` bars
-- (so a^-age stays below ~1e32 and never overflows); two restart grids offset by span / 2 mean
-- every bar has one partial sum with at least span / 2 bars of history. Bars are numbered
-- n = 0, 1, ... per symbol; the macros expect columns named `symbol` and `n`.
CREATE OR REPLACE TEMP MACRO rec_span(a) AS (2 * ceil(37 / -ln(a)))::BIGINT;

CREATE OR REPLACE TEMP MACRO rec_age(n, a, shift) AS (n + shift) % rec_span(a);

CREATE OR REPLACE TEMP MACRO rec_partial(u, a, n, shift) AS
    pow(a, rec_age(n, a, shift)) * sum(u * pow(a, -rec_age(n, a, shift))) OVER (
        PARTITION BY symbol ORDER BY n
        ROWS BETWEEN rec_age(n, a, shift) PRECEDING AND CURRENT ROW
    );

CREATE OR REPLACE TEMP MACRO linear_recurrence(u, a, n) AS
    CASE
        WHEN rec_age(n, a, 0) >= rec_span(a) // 2 THEN rec_partial(u, a, n, 0)
        ELSE rec_partial(u, a, n, rec_span(a) // 2)
    END;

-- TA-Lib's seeded smoothing of x: y[seed_bar] = mean of the p values of x ending at seed_bar,
-- then y[n] = a * y[n-1] + (1 - a) * x[n]. The seed needs no window of its own: feeding the
-- recurrence u[j] = x[j] / p * a^(j - seed_bar) for the p seed bars makes y[seed_bar] exactly
-- their mean. Values before seed_bar are meaningless; callers mask them.
CREATE OR REPLACE TEMP MACRO seeded_smoothing(x, a, p, seed_bar, n) AS linear_recurrence(
    CASE
        WHEN n > seed_bar THEN (1 - a) * x
        WHEN n > seed_bar - p THEN x / p * pow(a, n - seed_bar)
        ELSE 0
    END,
    a,
    n
);
