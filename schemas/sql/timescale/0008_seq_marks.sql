-- Re-sent ticks are dropped by a high-water mark of seq per partition, not by an
-- index: stock_prices keeps one B-tree, (symbol, time DESC), and a BRIN on time.
--
-- Measured (issue 15): binary COPY into stock_prices with its three indexes ran at
-- 65-91k rows/s, with one index at ~190-210k rows/s; the unique (source, source_seq,
-- time) index existed only to drop ticks a feed adapter re-sent. A source's seq
-- strictly increases and a Kafka partition keeps publish order, so the highest seq
-- stored from a (topic, partition, source) says which later records are re-sends:
-- the consumer drops a tick whose seq is at or below it before COPY, and moves
-- the mark in the same transaction as the rows and the offsets (fenced by the
-- same partition claim). Records that re-send old seqs on purpose carry a header
-- and are looked up by (symbol, time, source, seq) on the remaining index instead
-- (schemas/ticks.py: LOOKUP_HEADERS).

CREATE TABLE ingest_seq_marks (
    consumer_group TEXT    NOT NULL,
    topic          TEXT    NOT NULL,
    partition      INTEGER NOT NULL,
    source         TEXT    NOT NULL,
    max_seq        BIGINT  NOT NULL CHECK (max_seq >= 0),
    PRIMARY KEY (consumer_group, topic, partition, source)
);

DROP INDEX IF EXISTS stock_prices_source_seq_time_key;
-- The hypertable's default (time DESC) B-tree goes too. Reads of one symbol use
-- (symbol, time DESC); reads of a time window across symbols (nexanest status,
-- verify, the quote rebuild at start-up, dashboards) use a BRIN summary of time
-- instead: ticks arrive in time order, so a block range's min/max is tight, and
-- the summary costs next to nothing to keep (measured with
-- benchmarks/micro/dedup_indexes.py on 1M rows: COPY 1.55x the three-index rate
-- with (symbol, time) alone, 1.51x with the BRIN as well; "rows of the last
-- minute" 0.9 ms with it, 194 ms as a scan of the hour's chunk without).
DROP INDEX IF EXISTS stock_prices_time_idx;
CREATE INDEX stock_prices_time_brin ON stock_prices USING brin (time);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nexanest_ingest') THEN
        GRANT SELECT, INSERT, UPDATE ON ingest_seq_marks TO nexanest_ingest;
    END IF;
END $$;
