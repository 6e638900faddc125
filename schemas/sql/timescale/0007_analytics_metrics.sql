-- Analytics metrics (issue 12): figures the analytics service (services/analytics/) computes
-- from portfolio_snapshots, the bar views, stock_prices and market_indices, one row per
-- (subject, metric, window, time). One file for both TimescaleDB editions: a plain hypertable
-- and plain grants, nothing the Apache edition lacks.
--
-- Privacy: row-level security, not an ownership check in the service. A portfolio's rows
-- carry its owner (user_id, from the portfolio's snapshots); the service role reads a
-- portfolio row only while app.user_id (services/rls.py, per transaction) names that owner,
-- and writes one only under the owner's identity and only for a portfolio whose snapshots
-- name that owner. A route that forgot the check, or a query by id, therefore finds nothing
-- of another user's, the database decides. Symbol rows (market data, public to every user of
-- the service) carry no owner and are readable by the role at all times.

CREATE TABLE analytics_metrics (
    time         TIMESTAMPTZ      NOT NULL,  -- the end of the window the value is about
    subject_kind TEXT             NOT NULL CHECK (subject_kind IN ('portfolio', 'symbol')),
    subject_id   TEXT             NOT NULL CHECK (length(subject_id) BETWEEN 1 AND 64),
    user_id      UUID,                       -- the portfolio's owner; NULL for a symbol
    metric       TEXT             NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_]{0,39}$'),
    time_window  TEXT             NOT NULL CHECK (time_window ~ '^[a-z0-9]{1,8}$'),  -- 1h, 1d, 1w, 1m, ytd
    -- Ratios, returns and prices as binary doubles: every figure is a float computation
    -- (services/analytics/metrics.py documents each one's precision); never NaN or infinite.
    value        DOUBLE PRECISION NOT NULL CHECK (value <> 'NaN' AND value > '-Infinity' AND value < 'Infinity'),
    computed_at  TIMESTAMPTZ      NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_kind, subject_id, metric, time_window, time),
    CHECK ((subject_kind = 'portfolio') = (user_id IS NOT NULL))
);

-- Chunks in a schema of their own that the service role cannot enter: a chunk has the
-- hypertable's grants but not its row-level security (as for portfolio_snapshots, 0006).
CREATE SCHEMA analytics_metric_chunks;
REVOKE ALL ON SCHEMA analytics_metric_chunks FROM PUBLIC;
-- A round every five minutes writes ~40 rows per subject: a week per chunk.
SELECT create_hypertable(
    'analytics_metrics', 'time',
    chunk_time_interval => INTERVAL '7 days',
    associated_schema_name => 'analytics_metric_chunks'
);
-- "The latest of each metric of a subject" and "one metric over a range" read backwards in time.
CREATE INDEX analytics_metrics_subject_time_idx ON analytics_metrics (subject_kind, subject_id, time DESC);

ALTER TABLE analytics_metrics ENABLE ROW LEVEL SECURITY;
ALTER TABLE analytics_metrics FORCE ROW LEVEL SECURITY;
CREATE POLICY analytics_metrics_read ON analytics_metrics FOR SELECT TO nexanest_analytics
    USING (subject_kind = 'symbol' OR user_id = nullif(current_setting('app.user_id', true), '')::uuid);
-- A portfolio row only as its owner, and only for a portfolio whose snapshots (read under
-- their own policy below, so as the same user) name that owner.
CREATE POLICY analytics_metrics_write ON analytics_metrics FOR INSERT TO nexanest_analytics
    WITH CHECK (
        CASE WHEN subject_kind = 'symbol' THEN user_id IS NULL
             ELSE user_id = nullif(current_setting('app.user_id', true), '')::uuid
                  AND EXISTS (SELECT 1 FROM portfolio_snapshots s
                               WHERE s.portfolio_id = subject_id::uuid AND s.user_id = analytics_metrics.user_id)
        END
    );
CREATE POLICY analytics_metrics_owner_role ON analytics_metrics TO CURRENT_USER USING (true) WITH CHECK (true);

-- The analytics role reads a user's own snapshots (ownership checks, the policy above).
CREATE POLICY portfolio_snapshots_analytics ON portfolio_snapshots FOR SELECT TO nexanest_analytics
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);

-- The worker computes every portfolio's metrics in one round: it reads their value series
-- through this function, which runs as the owner (SECURITY DEFINER, pinned search_path) and
-- answers only what the metrics need: per portfolio and bucket of `bucket_width` in
-- [since, until), the last snapshot with a known total value, that value, and the net
-- contributions (cash + cost_basis - realised: deposits minus withdrawals, which buys, sells
-- and fees leave unchanged), so returns can leave deposits out. portfolio_ids NULL: every
-- portfolio. Only nexanest_analytics may EXECUTE it.
CREATE FUNCTION analytics_portfolio_series(
    bucket_width  INTERVAL,
    since         TIMESTAMPTZ,
    until         TIMESTAMPTZ,
    portfolio_ids UUID[]
) RETURNS TABLE (portfolio_id UUID, user_id UUID, bucket TIMESTAMPTZ, total_value NUMERIC, contributions NUMERIC)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.portfolio_id, s.user_id, public.time_bucket(bucket_width, s.time) AS bucket,
           public.last(s.total_value, s.time), public.last(s.cash + s.cost_basis - s.realised, s.time)
      FROM public.portfolio_snapshots s
     WHERE s.time >= since AND s.time < until AND s.total_value IS NOT NULL
       AND (portfolio_ids IS NULL OR s.portfolio_id = ANY (portfolio_ids))
     GROUP BY s.portfolio_id, s.user_id, bucket
     ORDER BY s.portfolio_id, bucket
$$;
REVOKE ALL ON FUNCTION analytics_portfolio_series(INTERVAL, TIMESTAMPTZ, TIMESTAMPTZ, UUID[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics_portfolio_series(INTERVAL, TIMESTAMPTZ, TIMESTAMPTZ, UUID[]) TO nexanest_analytics;

-- What the service reads: bars (the views, the same on both editions; a view reads below it
-- with its owner's rights), ticks for spreads, index values for beta, snapshots (under the
-- policy above); and its own metrics. No UPDATE, DELETE or TRUNCATE anywhere.
GRANT SELECT ON stock_prices, market_indices, ohlcv_1m, ohlcv_5m, ohlcv_1h, ohlcv_1d, portfolio_snapshots
    TO nexanest_analytics;
GRANT SELECT, INSERT ON analytics_metrics TO nexanest_analytics;
