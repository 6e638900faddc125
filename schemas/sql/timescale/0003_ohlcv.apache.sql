-- OHLCV bars at 1 minute, 5 minutes, 1 hour and 1 day: the Apache-edition variant.
-- (0003_ohlcv.timescale.sql builds the same query surface from continuous aggregates.)
--
-- The query surface, identical on both editions: views ohlcv_1m, ohlcv_5m, ohlcv_1h and
-- ohlcv_1d with columns (bucket, symbol, open, high, low, close, volume, trade_count, vwap).
-- Buckets are time_bucket() buckets in UTC. Open and close are the prices of the first and
-- last tick by tick time, ties broken by source_seq (never by arrival order).
--
-- Here there are no continuous aggregates, so the consumer maintains one rollup table per
-- resolution inside the transaction that COPYs the ticks (pipeline/sinks/ohlcv.py), and
-- `nexanest bars repair` recomputes any range from stock_prices as this owner role.
--
-- One table per resolution rather than one keyed by resolution: each is a hypertable with a
-- chunk interval that suits its row rate, so retention can drop old 1m bars chunk by chunk
-- (drop_chunks exists in this edition) while keeping coarser bars, with no DELETE; and each
-- key stays (symbol, bucket), which is also the index a "symbol over a range" read wants.

-- A total order on ticks that is one value: (time in microseconds, source_seq) packed into a
-- numeric, exact, so SQL can use first()/last() with it. source_seq is shifted into
-- [0, 2^64) so negative sequence numbers keep their order too. Immutable (the epoch of an
-- interval does not depend on the session time zone), as continuous aggregates require of
-- every function they use.
CREATE FUNCTION tick_order(t TIMESTAMPTZ, seq BIGINT) RETURNS NUMERIC
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN extract(epoch FROM t - TIMESTAMPTZ '1970-01-01 00:00:00+00') * 1000000 * 18446744073709551616
           + (seq::NUMERIC + 9223372036854775808);

-- Per (symbol, bucket), everything needed to merge in more ticks later in any order:
-- open and close with the (time, seq) that chose them, high, low, and the sums. pv is
-- sum(price * size), so vwap = pv / volume. Sums keep fixed scales (9 and 18 digits, those
-- of sum(size) and sum(price * size) over NUMERIC(20, 9) columns), so the view computes the
-- same vwap digits as a GROUP BY over stock_prices does.
CREATE TABLE ohlcv_1m_rollup (
    symbol      TEXT            NOT NULL,
    bucket      TIMESTAMPTZ     NOT NULL,
    open        NUMERIC(20, 9)  NOT NULL,
    open_time   TIMESTAMPTZ     NOT NULL,
    open_seq    BIGINT          NOT NULL,
    high        NUMERIC(20, 9)  NOT NULL,
    low         NUMERIC(20, 9)  NOT NULL,
    close       NUMERIC(20, 9)  NOT NULL,
    close_time  TIMESTAMPTZ     NOT NULL,
    close_seq   BIGINT          NOT NULL,
    volume      NUMERIC(40, 9)  NOT NULL,
    trade_count BIGINT          NOT NULL CHECK (trade_count > 0),
    pv          NUMERIC(60, 18) NOT NULL,
    PRIMARY KEY (symbol, bucket)
);
CREATE TABLE ohlcv_5m_rollup (LIKE ohlcv_1m_rollup INCLUDING ALL);
CREATE TABLE ohlcv_1h_rollup (LIKE ohlcv_1m_rollup INCLUDING ALL);
CREATE TABLE ohlcv_1d_rollup (LIKE ohlcv_1m_rollup INCLUDING ALL);

-- Chunk intervals: 1,440 rows per symbol and day at 1m, so a day of 1m bars for a thousand
-- symbols is ~1.4M rows, a few hundred MB with indexes: a comfortable chunk. The coarser
-- tables hold 5x, 60x and 1440x fewer rows, so their chunks span proportionally more time.
SELECT create_hypertable('ohlcv_1m_rollup', 'bucket', chunk_time_interval => INTERVAL '1 day');
SELECT create_hypertable('ohlcv_5m_rollup', 'bucket', chunk_time_interval => INTERVAL '7 days');
SELECT create_hypertable('ohlcv_1h_rollup', 'bucket', chunk_time_interval => INTERVAL '30 days');
SELECT create_hypertable('ohlcv_1d_rollup', 'bucket', chunk_time_interval => INTERVAL '365 days');

-- The query surface. Types are spelled out so both editions expose the same ones.
CREATE VIEW ohlcv_1m AS
SELECT bucket, symbol, open, high, low, close, volume, trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_1m_rollup;
CREATE VIEW ohlcv_5m AS
SELECT bucket, symbol, open, high, low, close, volume, trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_5m_rollup;
CREATE VIEW ohlcv_1h AS
SELECT bucket, symbol, open, high, low, close, volume, trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_1h_rollup;
CREATE VIEW ohlcv_1d AS
SELECT bucket, symbol, open, high, low, close, volume, trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM ohlcv_1d_rollup;

-- The consumer upserts bars (INSERT ... ON CONFLICT DO UPDATE needs SELECT, INSERT and
-- UPDATE); it never deletes them. Repair runs as the owner.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nexanest_ingest') THEN
        GRANT SELECT, INSERT, UPDATE ON ohlcv_1m_rollup, ohlcv_5m_rollup, ohlcv_1h_rollup, ohlcv_1d_rollup
            TO nexanest_ingest;
        GRANT SELECT ON ohlcv_1m, ohlcv_5m, ohlcv_1h, ohlcv_1d TO nexanest_ingest;
    ELSE
        RAISE WARNING 'role nexanest_ingest does not exist; the pipeline will need another role with these rights';
    END IF;
END $$;
