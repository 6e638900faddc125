-- OHLCV bars at 1 minute, 5 minutes, 1 hour and 1 day: the community-edition variant
-- (timescaledb.license = timescale: the official images, the compose stack).
-- 0003_ohlcv.apache.sql builds the same query surface from rollup tables the consumer keeps.
--
-- The query surface, identical on both editions: views ohlcv_1m, ohlcv_5m, ohlcv_1h and
-- ohlcv_1d with columns (bucket, symbol, open, high, low, close, volume, trade_count, vwap).
-- Buckets are time_bucket() buckets in UTC. Open and close are the prices of the first and
-- last tick by tick time, ties broken by source_seq (never by arrival order).
--
-- Here they are hierarchical continuous aggregates: 1m from stock_prices, 5m from 1m, 1h
-- from 5m, 1d from 1h, each with real-time aggregation (materialized_only = false: a query
-- adds the not yet materialized buckets from the level below, so the newest bar is current)
-- and a refresh policy. The consumer does nothing for bars on this edition.
--
-- Everything here may run in the migration's transaction: the aggregates are created WITH NO
-- DATA (only WITH DATA, which refreshes, must run outside one), and the policies' first runs
-- materialize the history. Until then real-time aggregation answers from the level below, so
-- the views are right from the start, only slower.

-- A total order on ticks that is one value: (time in microseconds, source_seq) packed into a
-- numeric, exact. first(price, time) alone would pick arbitrarily between ticks with the same
-- time; first(price, tick_order(time, source_seq)) breaks the tie by source_seq, as the
-- Apache path does. source_seq is shifted into [0, 2^64) so negative sequence numbers keep
-- their order too. Immutable (the epoch of an interval does not depend on the session time
-- zone), as continuous aggregates require of every function they use.
CREATE FUNCTION tick_order(t TIMESTAMPTZ, seq BIGINT) RETURNS NUMERIC
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN extract(epoch FROM t - TIMESTAMPTZ '1970-01-01 00:00:00+00') * 1000000 * 18446744073709551616
           + (seq::NUMERIC + 9223372036854775808);

-- Each level keeps what the next one needs to merge its rows: open_key/close_key are the
-- tick_order of the ticks that gave open and close (first(open, open_key) over 1m rows is the
-- first tick of the 5m bucket), and pv = sum(price * size) so vwap = pv / volume exactly.
CREATE MATERIALIZED VIEW ohlcv_1m_cagg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       symbol,
       first(price, tick_order(time, source_seq)) AS open,
       max(price) AS high,
       min(price) AS low,
       last(price, tick_order(time, source_seq)) AS close,
       min(tick_order(time, source_seq)) AS open_key,
       max(tick_order(time, source_seq)) AS close_key,
       sum(size) AS volume,
       count(*) AS trade_count,
       sum(price * size) AS pv
  FROM stock_prices
 GROUP BY time_bucket(INTERVAL '1 minute', time), symbol
WITH NO DATA;

CREATE MATERIALIZED VIEW ohlcv_5m_cagg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '5 minutes', bucket) AS bucket,
       symbol,
       first(open, open_key) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, close_key) AS close,
       min(open_key) AS open_key,
       max(close_key) AS close_key,
       sum(volume) AS volume,
       sum(trade_count) AS trade_count,
       sum(pv) AS pv
  FROM ohlcv_1m_cagg
 GROUP BY time_bucket(INTERVAL '5 minutes', bucket), symbol
WITH NO DATA;

CREATE MATERIALIZED VIEW ohlcv_1h_cagg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       symbol,
       first(open, open_key) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, close_key) AS close,
       min(open_key) AS open_key,
       max(close_key) AS close_key,
       sum(volume) AS volume,
       sum(trade_count) AS trade_count,
       sum(pv) AS pv
  FROM ohlcv_5m_cagg
 GROUP BY time_bucket(INTERVAL '1 hour', bucket), symbol
WITH NO DATA;

CREATE MATERIALIZED VIEW ohlcv_1d_cagg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket,
       symbol,
       first(open, open_key) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, close_key) AS close,
       min(open_key) AS open_key,
       max(close_key) AS close_key,
       sum(volume) AS volume,
       sum(trade_count) AS trade_count,
       sum(pv) AS pv
  FROM ohlcv_1h_cagg
 GROUP BY time_bucket(INTERVAL '1 day', bucket), symbol
WITH NO DATA;

-- Refresh policies. start_offset NULL: the window reaches back to the oldest data, so a late
-- tick of any age (the validator admits up to validation.max_past_s, 7 days by default) is
-- materialized by the next run; a refresh only recomputes buckets the invalidation log marks,
-- so the open window costs little once history is materialized. end_offset of one bucket
-- leaves the bucket still filling to real-time aggregation. Each level runs at least as often
-- as the one above it, so a correction reaches the 1d bar within minutes, not a day.
-- When raw-tick retention arrives (issue 4, data lifecycle), start_offset must become shorter
-- than the raw retention, or a refresh over dropped raw chunks would empty old bars.
SELECT add_continuous_aggregate_policy('ohlcv_1m_cagg',
    start_offset => NULL, end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('ohlcv_5m_cagg',
    start_offset => NULL, end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '2 minutes');
SELECT add_continuous_aggregate_policy('ohlcv_1h_cagg',
    start_offset => NULL, end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('ohlcv_1d_cagg',
    start_offset => NULL, end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '10 minutes');

-- The query surface: plain views over the aggregates, hiding the merge columns and giving
-- the same column types as the Apache variant.
CREATE VIEW ohlcv_1m AS
SELECT bucket, symbol, open::NUMERIC(20, 9) AS open, high::NUMERIC(20, 9) AS high, low::NUMERIC(20, 9) AS low,
       close::NUMERIC(20, 9) AS close, volume::NUMERIC(40, 9) AS volume, trade_count::BIGINT AS trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_1m_cagg;
CREATE VIEW ohlcv_5m AS
SELECT bucket, symbol, open::NUMERIC(20, 9) AS open, high::NUMERIC(20, 9) AS high, low::NUMERIC(20, 9) AS low,
       close::NUMERIC(20, 9) AS close, volume::NUMERIC(40, 9) AS volume, trade_count::BIGINT AS trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_5m_cagg;
CREATE VIEW ohlcv_1h AS
SELECT bucket, symbol, open::NUMERIC(20, 9) AS open, high::NUMERIC(20, 9) AS high, low::NUMERIC(20, 9) AS low,
       close::NUMERIC(20, 9) AS close, volume::NUMERIC(40, 9) AS volume, trade_count::BIGINT AS trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_1h_cagg;
CREATE VIEW ohlcv_1d AS
SELECT bucket, symbol, open::NUMERIC(20, 9) AS open, high::NUMERIC(20, 9) AS high, low::NUMERIC(20, 9) AS low,
       close::NUMERIC(20, 9) AS close, volume::NUMERIC(40, 9) AS volume, trade_count::BIGINT AS trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_1d_cagg;

-- The ingest role only reads bars here (the views run with their owner's rights on the
-- aggregates below them).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nexanest_ingest') THEN
        GRANT SELECT ON ohlcv_1m, ohlcv_5m, ohlcv_1h, ohlcv_1d TO nexanest_ingest;
    ELSE
        RAISE WARNING 'role nexanest_ingest does not exist; grant SELECT on the ohlcv views to the reading role';
    END IF;
END $$;
