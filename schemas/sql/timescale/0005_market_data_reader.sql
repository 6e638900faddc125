-- The market data service's role, nexanest_market_data: it reads ticks, index values and
-- bars, and nothing else. It owns nothing (deploy/local and deploy/compose create it as a
-- bare login role), so these grants are all it can do: no INSERT, UPDATE, DELETE or
-- TRUNCATE anywhere, no offsets, no system events, no DDL.
--
-- One file for both editions: the bars are read through the views ohlcv_1m .. ohlcv_1d,
-- the query surface both variants of 0003 build (rollup tables behind them on the Apache
-- edition, continuous aggregates on the community edition). A view reads the relations
-- below it with its owner's rights, so SELECT on the view is the whole grant, and the
-- tables and aggregates behind it stay out of the role's reach.
--
-- GRANT on a hypertable covers its chunks, those to come included (TimescaleDB copies the
-- hypertable's privileges to each new chunk).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nexanest_market_data') THEN
        GRANT SELECT ON stock_prices, market_indices, ohlcv_1m, ohlcv_5m, ohlcv_1h, ohlcv_1d
            TO nexanest_market_data;
    ELSE
        -- As for the ingest role (0001): a database without the role still migrates, and the
        -- service's readiness check (a read of stock_prices) reports the missing grant.
        RAISE WARNING 'role nexanest_market_data does not exist; the market data service cannot read until it is granted SELECT on stock_prices, market_indices and the ohlcv views';
    END IF;
END $$;
