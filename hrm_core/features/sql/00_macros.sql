-- Linear recurrences y[n] = a * y[n-1] + u[n] per symbol: EMA (a = 1 - 2/(p+1)) and Wilder
-- smoothing (a = 1 - 1/p). SQL windows cannot recurse, but the recurrence unrolls to
-- y[n] = sum_j u[j] * a^(n-j), and terms older than `span / 2` bars weigh less than a^(span/2)
-- ~ 1e-16 of the newest, below double precision. Each partial sum restarts every `span` bars
-- (so a^-age stays below ~1e32 and never overflows); two restart grids offset by span / 2 mean
-- every bar has one partial sum with at least span / 2 bars of history. Seeds (TA-Lib's SMA seed)
-- enter as u at the seed bar, with u = 0 before it. Bars are numbered n = 0, 1, ... per symbol;
-- the macros expect columns named `symbol` and `n`.
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
