-- Saved reports (issue 12): a user's named query over the analytics metrics, with an
-- optional schedule, in the analytics database. The service validates `definition` with a
-- pydantic model (services/analytics/reports.py: subject kind, subject ids, metrics,
-- windows) before it is stored; the CHECKs here are the last line behind it.
--
-- Row-level security binds the service: ENABLE and FORCE, policies USING and WITH CHECK on
-- app.user_id, which services/rls.py sets per transaction. The service role
-- nexanest_analytics owns nothing and bypasses nothing, so it sees, changes and deletes the
-- acting user's reports only, and cannot store a report in another user's name. The owner
-- (the migration role) keeps a policy of its own: it could ALTER the table anyway.

CREATE TABLE saved_reports (
    report_id  UUID        PRIMARY KEY,
    user_id    UUID        NOT NULL,
    name       TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    definition JSONB       NOT NULL CHECK (jsonb_typeof(definition) = 'object' AND pg_column_size(definition) < 16384),
    -- NULL: run on demand only.
    schedule   TEXT        CHECK (schedule IN ('hourly', 'daily', 'weekly')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

ALTER TABLE saved_reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE saved_reports FORCE ROW LEVEL SECURITY;
CREATE POLICY saved_reports_acting_user ON saved_reports TO nexanest_analytics
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY saved_reports_owner_role ON saved_reports TO CURRENT_USER USING (true) WITH CHECK (true);

-- A report's owner and id never change.
GRANT SELECT, INSERT, DELETE ON saved_reports TO nexanest_analytics;
GRANT UPDATE (name, definition, schedule, updated_at) ON saved_reports TO nexanest_analytics;
