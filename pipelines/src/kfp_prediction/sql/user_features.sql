-- Per-user features for one lookback window. BigQuery Standard SQL, the single source of
-- truth: the local warehouse runs it through sqlglot's BigQuery -> DuckDB transpiler.
-- Placeholders (Python str.format): the target date (a DATE literal, the partition column of
-- the features table), window start/end as UTC TIMESTAMP literals and the lookback in days;
-- the window is [start, end) and ends at 00:00 JST on the target date.
-- Kept to functions both engines share (no time-zone functions: the window is precomputed).
-- Conditional counts are COUNT(IF(condition, 1, NULL)), not COUNTIF: INT64 on BigQuery
-- either way, but on DuckDB COUNT_IF is a SUM over booleans (a 16-byte state returning
-- HUGEINT; duckdb v1.4.1 extension/core_functions/aggregate/distributive/sum.cpp) where COUNT
-- keeps 8 bytes and returns BIGINT, which matters to the page-view aggregate's memory at 10M
-- users (pipelines/README.md). SUM(amount) is cast: DuckDB's SUM is HUGEINT, which Arrow
-- turns into slow decimals. Ages are differences of UNIX_MICROS (DuckDB: EPOCH_US), not
-- TIMESTAMP_DIFF: DuckDB runs that as a calendar DATE_DIFF on TIMESTAMPTZ, ~3 s per 1M users.
-- NULLs are handled explicitly, never through GREATEST/LEAST (NULL-propagating on BigQuery,
-- NULL-ignoring on DuckDB): a user without registered_at is not "registered before the
-- target date" and gets no row on either engine; registered_at < window end makes tenure > 0.
WITH views AS (
  SELECT
    user_id,
    COUNT(*) AS pv_count,
    COUNT(IF(device = 'app', 1, NULL)) AS pv_app,
    COUNT(IF(category = 'tops', 1, NULL)) AS pv_tops,
    COUNT(IF(category = 'bottoms', 1, NULL)) AS pv_bottoms,
    COUNT(IF(category = 'outerwear', 1, NULL)) AS pv_outerwear,
    COUNT(IF(category = 'shoes', 1, NULL)) AS pv_shoes,
    COUNT(IF(category = 'bags', 1, NULL)) AS pv_bags,
    COUNT(IF(category = 'accessories', 1, NULL)) AS pv_accessories,
    MAX(event_time) AS last_view_at
  FROM page_views
  WHERE event_time >= {window_start} AND event_time < {window_end}
  GROUP BY user_id
),
buys AS (
  SELECT
    user_id,
    COUNT(*) AS purchase_count,
    CAST(SUM(amount) AS INT64) AS purchase_amount,
    COUNT(IF(category = 'tops', 1, NULL)) AS buy_tops,
    COUNT(IF(category = 'bottoms', 1, NULL)) AS buy_bottoms,
    COUNT(IF(category = 'outerwear', 1, NULL)) AS buy_outerwear,
    COUNT(IF(category = 'shoes', 1, NULL)) AS buy_shoes,
    COUNT(IF(category = 'bags', 1, NULL)) AS buy_bags,
    COUNT(IF(category = 'accessories', 1, NULL)) AS buy_accessories,
    MAX(event_time) AS last_purchase_at
  FROM purchases
  WHERE event_time >= {window_start} AND event_time < {window_end}
  GROUP BY user_id
)
SELECT
  {target_date} AS target_date,
  u.user_id AS user_id,
  u.member_rank AS member_rank,
  u.age_band AS age_band,
  (UNIX_MICROS({window_end}) - UNIX_MICROS(u.registered_at)) / 86400000000.0 AS tenure_days,
  COALESCE(v.pv_count, 0) AS pv_count,
  COALESCE(v.pv_app, 0) AS pv_app,
  COALESCE(v.pv_tops, 0) AS pv_tops,
  COALESCE(v.pv_bottoms, 0) AS pv_bottoms,
  COALESCE(v.pv_outerwear, 0) AS pv_outerwear,
  COALESCE(v.pv_shoes, 0) AS pv_shoes,
  COALESCE(v.pv_bags, 0) AS pv_bags,
  COALESCE(v.pv_accessories, 0) AS pv_accessories,
  COALESCE((UNIX_MICROS({window_end}) - UNIX_MICROS(v.last_view_at)) / 86400000000.0, {lookback_days})
    AS days_since_last_view,
  COALESCE(b.purchase_count, 0) AS purchase_count,
  COALESCE(b.purchase_amount, 0) AS purchase_amount,
  COALESCE(b.buy_tops, 0) AS buy_tops,
  COALESCE(b.buy_bottoms, 0) AS buy_bottoms,
  COALESCE(b.buy_outerwear, 0) AS buy_outerwear,
  COALESCE(b.buy_shoes, 0) AS buy_shoes,
  COALESCE(b.buy_bags, 0) AS buy_bags,
  COALESCE(b.buy_accessories, 0) AS buy_accessories,
  COALESCE((UNIX_MICROS({window_end}) - UNIX_MICROS(b.last_purchase_at)) / 86400000000.0, {lookback_days})
    AS days_since_last_purchase
FROM users AS u
LEFT JOIN views AS v ON v.user_id = u.user_id
LEFT JOIN buys AS b ON b.user_id = u.user_id
WHERE u.registered_at IS NOT NULL AND u.registered_at < {window_end}
