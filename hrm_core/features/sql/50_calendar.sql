-- Calendar and session (shared): day of week, month and time of day on the unit circle, so that
-- Friday sits next to Monday and 23:00 next to 00:00. Timestamps are UTC.
CREATE OR REPLACE TEMP TABLE f_calendar AS
SELECT
    symbol,
    n,
    sin(2 * pi() * isodow(ts) / 7)                               AS s_dow_sin,
    cos(2 * pi() * isodow(ts) / 7)                               AS s_dow_cos,
    sin(2 * pi() * (month(ts) - 1) / 12)                         AS s_month_sin,
    cos(2 * pi() * (month(ts) - 1) / 12)                         AS s_month_cos,
    sin(2 * pi() * (hour(ts) * 60 + minute(ts)) / 1440)          AS s_time_of_day_sin,
    cos(2 * pi() * (hour(ts) * 60 + minute(ts)) / 1440)          AS s_time_of_day_cos
FROM bars;
