-- Exactly-once ingestion: partition claims that fence stale writers, and a
-- uniqueness rule that makes a tick re-sent by its feed adapter harmless.

-- Each consumer that is assigned a partition claims it by incrementing its
-- generation, and every batch it writes checks that generation inside the same
-- transaction as the COPY. A consumer that lost the partition (rebalance, long
-- pause, network split) therefore cannot commit a batch for it afterwards.
ALTER TABLE ingest_offsets ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
-- A partition claimed but never written has no offset yet: the consumer then
-- starts from Kafka's committed offset (or the earliest one).
ALTER TABLE ingest_offsets ALTER COLUMN next_offset DROP NOT NULL;

-- A tick is named by its source, the source's sequence number and its time
-- (a hypertable's unique index must include the time column). The consumer's hot
-- path stays a plain COPY; only a batch that hits this rule is re-inserted with
-- ON CONFLICT DO NOTHING, so a duplicate costs something only when it happens.
CREATE UNIQUE INDEX stock_prices_source_seq_time_key ON stock_prices (source, source_seq, time);
