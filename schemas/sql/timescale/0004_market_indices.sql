-- Market indices (pipeline/sinks/indices.py): one row per index per consumer batch in
-- which a constituent moved. The consumer stores them after the batch's ticks commit,
-- with INSERT ... ON CONFLICT DO NOTHING: a unique rule on (index_name, time) makes a
-- retried or replayed insert harmless (a hypertable's unique index must hold its time
-- column, which this one does). The consumer gives each row of an index a strictly later
-- time than the previous one, so two different values never compete for one key.

CREATE UNIQUE INDEX market_indices_name_time_key ON market_indices (index_name, time DESC);
-- The unique index serves every query the plain one served (same columns, same order).
DROP INDEX market_indices_name_time_idx;

-- 0001 granted these already; repeated so this migration states what the consumer needs.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nexanest_ingest') THEN
        GRANT SELECT, INSERT ON market_indices TO nexanest_ingest;
    ELSE
        RAISE WARNING 'role nexanest_ingest does not exist; the pipeline will need another role with these rights';
    END IF;
END $$;
