-- Market data hypertables and the consumer's offset table.
-- Applied by `nexanest migrate` as the owner role `timescale`; the extension itself
-- is created by the superuser when the cluster is set up (deploy/local/timescaledb.sh,
-- or the image's init in docker compose).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE EXCEPTION 'the timescaledb extension is not installed in database %', current_database()
            USING HINT = 'run deploy/local/timescaledb.sh start (it runs CREATE EXTENSION as the superuser)';
    END IF;
END $$;

-- One row per tick. Prices are exact decimals (the wire carries integers x 1e9).
-- source + source_seq name the tick at its origin; kafka_partition + kafka_offset
-- name the record it was ingested from; together they trace any row back.
CREATE TABLE stock_prices (
    time            TIMESTAMPTZ    NOT NULL,
    symbol          TEXT           NOT NULL,
    price           NUMERIC(20, 9) NOT NULL CHECK (price > 0),
    size            NUMERIC(20, 9) NOT NULL CHECK (size >= 0),
    bid             NUMERIC(20, 9),
    ask             NUMERIC(20, 9),
    exchange        TEXT           NOT NULL,
    source          TEXT           NOT NULL,
    source_seq      BIGINT         NOT NULL,
    kafka_partition INTEGER        NOT NULL,
    kafka_offset    BIGINT         NOT NULL,
    ingested_at     TIMESTAMPTZ    NOT NULL DEFAULT now()
);

-- Chunk interval: 1 hour. TimescaleDB's guidance is that the chunks being written
-- (with their indexes) fit in about a quarter of memory. A row here is ~110 bytes
-- plus ~60 bytes in the two indexes; at a sustained 20k ticks/s an hour is 72M
-- rows, ~12 GB, near the limit of this 24 GB class of machine, and at typical
-- rates (a few thousand ticks/s) a few GB. Smaller chunks also let retention drop
-- raw ticks hour by hour. Change with set_chunk_time_interval() for other rates.
SELECT create_hypertable('stock_prices', 'time', chunk_time_interval => INTERVAL '1 hour');

-- "Latest N ticks of a symbol" and "a symbol over a time range" are both an index
-- range scan on (symbol, time DESC); the hypertable's default (time DESC) index
-- serves "everything in a time window".
CREATE INDEX stock_prices_symbol_time_idx ON stock_prices (symbol, time DESC);

-- Index values computed from ticks (see the market_indices work); one row per
-- index per computation.
CREATE TABLE market_indices (
    time          TIMESTAMPTZ    NOT NULL,
    index_name    TEXT           NOT NULL,
    value         NUMERIC(20, 9) NOT NULL,
    constituents  INTEGER        NOT NULL CHECK (constituents > 0),
    method        TEXT           NOT NULL,
    computed_at   TIMESTAMPTZ    NOT NULL DEFAULT now()
);
SELECT create_hypertable('market_indices', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX market_indices_name_time_idx ON market_indices (index_name, time DESC);

-- Operational events from every component (schemas/events.py is the wire shape).
CREATE TABLE system_events (
    time        TIMESTAMPTZ NOT NULL,
    event_id    UUID        NOT NULL,
    component   TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    severity    TEXT        NOT NULL CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    message     TEXT        NOT NULL,
    host        TEXT        NOT NULL,
    details     JSONB       NOT NULL DEFAULT '{}'::jsonb
);
SELECT create_hypertable('system_events', 'time', chunk_time_interval => INTERVAL '7 days');
CREATE INDEX system_events_component_time_idx ON system_events (component, time DESC);
CREATE INDEX system_events_severity_time_idx ON system_events (severity, time DESC);

-- The next Kafka offset to read per (group, topic, partition), written in the same
-- transaction as the COPY of the batch that consumed up to it.
CREATE TABLE ingest_offsets (
    consumer_group TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    partition      INTEGER     NOT NULL,
    next_offset    BIGINT      NOT NULL CHECK (next_offset >= 0),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Least privilege for the ingest role: append ticks, events and indices, read
-- back, and move its own offsets. No UPDATE/DELETE on market data, no DDL.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nexanest_ingest') THEN
        GRANT SELECT, INSERT ON stock_prices, market_indices, system_events TO nexanest_ingest;
        GRANT SELECT, INSERT, UPDATE ON ingest_offsets TO nexanest_ingest;
    ELSE
        RAISE WARNING 'role nexanest_ingest does not exist; the pipeline will need another role with INSERT rights';
    END IF;
END $$;
