-- Scheduled saved reports (issue 12): every run of a report with a schedule, stored by
-- the analytics worker (services/analytics/runs.py), read by GET /analytics/reports/{id}/runs.
-- `result` is exactly what GET /analytics/reports/{id}/run answers (the ReportRun model).
--
-- Row-level security binds the service as on saved_reports: ENABLE and FORCE, USING and
-- WITH CHECK on app.user_id. The worker runs a report acting as its owner (acting_as),
-- like a request: it reads the report, the metrics and writes the run under the owner's
-- identity, and cannot store a run in another user's name. The composite foreign key
-- adds that a run's owner is its report's owner, and a deleted report takes its runs.
--
-- The one way across users is the due-report index, a SECURITY DEFINER function owned by
-- the owner (CURRENT_USER below), with a pinned search_path, returning only the id, owner
-- and schedule of each due report, executable by nexanest_analytics alone (the precedent:
-- notifications/0002's notification_alerts_to_evaluate).

ALTER TABLE saved_reports ADD CONSTRAINT saved_reports_id_user_key UNIQUE (report_id, user_id);

CREATE TABLE report_runs (
    report_id UUID        NOT NULL,
    user_id   UUID        NOT NULL,
    -- The worker's round time (aligned to analytics_interval_s): two workers side by side
    -- store a round's run once (the primary key, ON CONFLICT DO NOTHING).
    ran_at    TIMESTAMPTZ NOT NULL,
    result    JSONB       NOT NULL CHECK (jsonb_typeof(result) = 'object'),
    PRIMARY KEY (report_id, ran_at),
    CONSTRAINT report_runs_report_fkey FOREIGN KEY (report_id, user_id)
        REFERENCES saved_reports (report_id, user_id) ON DELETE CASCADE
);

ALTER TABLE report_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE report_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY report_runs_acting_user ON report_runs TO nexanest_analytics
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY report_runs_owner_role ON report_runs TO CURRENT_USER USING (true) WITH CHECK (true);

-- Runs are records: the service adds and reads them, never changes or deletes one.
GRANT SELECT, INSERT ON report_runs TO nexanest_analytics;

-- Due at `due_at`: a scheduled report never run, or whose last run is at least its period
-- before `due_at`; the longest waiting first (never run before all), at most `max_reports`.
CREATE FUNCTION analytics_due_reports(due_at TIMESTAMPTZ, max_reports INTEGER)
    RETURNS TABLE (report_id UUID, user_id UUID, schedule TEXT)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.report_id, r.user_id, r.schedule
      FROM public.saved_reports r
      LEFT JOIN LATERAL (
            SELECT max(x.ran_at) AS ran_at FROM public.report_runs x WHERE x.report_id = r.report_id
           ) last ON true
     WHERE r.schedule IS NOT NULL
       AND (last.ran_at IS NULL
            OR last.ran_at <= due_at - CASE r.schedule WHEN 'hourly' THEN interval '1 hour'
                                                   WHEN 'daily' THEN interval '1 day'
                                                   ELSE interval '7 days' END)
     ORDER BY last.ran_at NULLS FIRST, r.report_id
     LIMIT greatest(max_reports, 0)
$$;
REVOKE ALL ON FUNCTION analytics_due_reports(TIMESTAMPTZ, INTEGER) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics_due_reports(TIMESTAMPTZ, INTEGER) TO nexanest_analytics;
