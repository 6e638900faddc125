-- Portfolio snapshots (issue 11): the value of every portfolio, written on a schedule by the
-- portfolio service's snapshot worker (services/portfolio/snapshots.py) and read back by
-- GET /portfolios/{id}/history as time_bucket()s of them.
--
-- One file for both TimescaleDB editions: a plain hypertable, no compression or continuous
-- aggregates, so the Apache edition has everything it needs.
--
-- A snapshot is taken at a time aligned to the worker's interval, and (portfolio_id, time)
-- is unique: two workers (the service's own and `nexanest serve portfolio-snapshots`), or
-- a round run twice, write each snapshot once. market_value, unrealised and total_value are
-- NULL when an open holding had no fresh quote at that time (`unpriced` counts them): a
-- value computed from a stale price is never stored as if it were current.

CREATE TABLE portfolio_snapshots (
    time         TIMESTAMPTZ    NOT NULL,
    portfolio_id UUID           NOT NULL,
    user_id      UUID           NOT NULL,
    market_value NUMERIC(38, 9),           -- the open holdings at their quotes
    cost_basis   NUMERIC(38, 9) NOT NULL,  -- of the open holdings (average cost)
    cash         NUMERIC(38, 9) NOT NULL,
    unrealised   NUMERIC(38, 9),           -- market_value - cost_basis
    realised     NUMERIC(38, 9) NOT NULL,  -- everything realised so far
    total_value  NUMERIC(38, 9),           -- market_value + cash
    positions    INTEGER        NOT NULL CHECK (positions >= 0),  -- open holdings
    unpriced     INTEGER        NOT NULL CHECK (unpriced BETWEEN 0 AND positions),
    PRIMARY KEY (portfolio_id, time),
    CHECK ((market_value IS NULL) = (unpriced > 0)),
    CHECK ((unrealised IS NULL) = (market_value IS NULL)),
    CHECK ((total_value IS NULL) = (market_value IS NULL))
);

-- Chunks live in a schema of their own that the service role cannot even look into.
-- TimescaleDB gives every chunk the hypertable's grants but not its row-level security, so
-- a role that may SELECT the hypertable could read every user's rows straight from a chunk
-- in _timescaledb_internal (measured on 2.19.3: it can). Here it cannot name a chunk at
-- all; queries through the hypertable reach them as usual, under its policies.
CREATE SCHEMA portfolio_snapshot_chunks;
REVOKE ALL ON SCHEMA portfolio_snapshot_chunks FROM PUBLIC;

-- One day per chunk: at the default 60 s interval, 1,440 rows per portfolio and day.
SELECT create_hypertable(
    'portfolio_snapshots', 'time',
    chunk_time_interval => INTERVAL '1 day',
    associated_schema_name => 'portfolio_snapshot_chunks'
);

ALTER TABLE portfolio_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE portfolio_snapshots FORCE ROW LEVEL SECURITY;
-- The service sees and deletes the snapshots of the acting user only (services/rls.py sets
-- app.user_id per transaction); it writes none directly (record_portfolio_snapshots below).
CREATE POLICY portfolio_snapshots_acting_user ON portfolio_snapshots TO nexanest_portfolio
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
-- The owner (this migration's role) sees everything; it could ALTER the table anyway.
CREATE POLICY portfolio_snapshots_owner_role ON portfolio_snapshots TO CURRENT_USER
    USING (true) WITH CHECK (true);

-- Reading history, and deleting it with its portfolio.
GRANT SELECT, DELETE ON portfolio_snapshots TO nexanest_portfolio;

-- The worker writes a round's snapshots, of many users, in one statement. Row-level
-- security admits one acting user per statement, so the write goes through this function,
-- which runs as the owner (SECURITY DEFINER) with a pinned search_path and does nothing
-- but insert the rows it is given (existing (portfolio_id, time) pairs are left as they
-- are). Only nexanest_portfolio may EXECUTE it: the worker has no role of its own. The
-- service role has no INSERT on the table itself.
CREATE FUNCTION record_portfolio_snapshots(
    snapshot_time  TIMESTAMPTZ,
    portfolio_ids  UUID[],
    user_ids       UUID[],
    market_values  NUMERIC[],
    cost_bases     NUMERIC[],
    cash_balances  NUMERIC[],
    realised_pnls  NUMERIC[],
    positions      INTEGER[],
    unpriced       INTEGER[]
) RETURNS INTEGER
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH written AS (
        INSERT INTO public.portfolio_snapshots AS s
            (time, portfolio_id, user_id, market_value, cost_basis, cash, unrealised, realised,
             total_value, positions, unpriced)
        SELECT snapshot_time, r.portfolio_id, r.user_id, r.market_value, r.cost_basis, r.cash,
               r.market_value - r.cost_basis, r.realised, r.market_value + r.cash, r.positions, r.unpriced
          FROM unnest(portfolio_ids, user_ids, market_values, cost_bases, cash_balances, realised_pnls,
                      positions, unpriced)
               AS r(portfolio_id, user_id, market_value, cost_basis, cash, realised, positions, unpriced)
        ON CONFLICT (portfolio_id, time) DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::INTEGER FROM written
$$;
REVOKE ALL ON FUNCTION record_portfolio_snapshots(TIMESTAMPTZ, UUID[], UUID[], NUMERIC[], NUMERIC[], NUMERIC[],
                                                  NUMERIC[], INTEGER[], INTEGER[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_portfolio_snapshots(TIMESTAMPTZ, UUID[], UUID[], NUMERIC[], NUMERIC[], NUMERIC[],
                                                     NUMERIC[], INTEGER[], INTEGER[]) TO nexanest_portfolio;
