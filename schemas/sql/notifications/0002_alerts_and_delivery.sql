-- The notifications service (issue 12, services/notifications/): price alerts with a
-- persisted crossing state, the in-app inbox, webhook endpoints, the record of every
-- delivery, and the admins who asked for operational alerts.
--
-- Row-level security: every table ENABLEs and FORCEs it, with USING and WITH CHECK on
-- `app.user_id` for the service's login role nexanest_notifications (owns nothing,
-- bypasses nothing), which services/rls.py `acting_as` sets per transaction. The owner
-- (the migration role, CURRENT_USER below) may read everything: it could ALTER the
-- tables anyway, and the functions at the end run as it.
--
-- The worker's cross-user access is deliberate and narrow. A delivery job names its
-- user, so the delivery worker acts as that user (acting_as) like a request does: the
-- inbox row, the endpoint and its delivery record are written under the same policies.
-- Only two things need every user at once, and each is a SECURITY DEFINER function
-- owned by the owner, with a pinned search_path, returning only the columns its reader
-- needs, executable by nexanest_notifications alone: the evaluator's index of enabled
-- alerts (notification_alerts_to_evaluate) and the admins subscribed to operational
-- alerts (notification_ops_subscribers).
--
-- The seed's placeholders (0001) had no writer; their rows, if any, are kept and
-- converted (an 'above' alert becomes 'crosses_above').

-- Alerts -------------------------------------------------------------------------------------
DROP POLICY price_alerts_owner ON price_alerts;
ALTER TABLE price_alerts RENAME COLUMN condition TO kind;
ALTER TABLE price_alerts DROP CONSTRAINT price_alerts_condition_check;
UPDATE price_alerts SET kind = 'crosses_' || kind;
ALTER TABLE price_alerts RENAME COLUMN active TO enabled;
ALTER TABLE price_alerts
    -- moves_pct only: the move (percent) is measured over the last window_s seconds.
    ADD COLUMN window_s         INTEGER,
    -- crosses_*: price units; moves_pct: percentage points. The alert re-arms only once
    -- the price is back past threshold -/+ hysteresis (the move below threshold - it).
    ADD COLUMN hysteresis       NUMERIC(20, 9) NOT NULL DEFAULT 0,
    -- armed: the next crossing fires; fired: waiting for the price to come back.
    ADD COLUMN state            TEXT           NOT NULL DEFAULT 'armed',
    -- Firings so far: the n-th firing's notification id is derived from (alert, n), so a
    -- firing repeated after a crash is the same notification (services/notifications/jobs.py).
    ADD COLUMN fired_count      BIGINT         NOT NULL DEFAULT 0,
    ADD COLUMN last_fired_at    TIMESTAMPTZ,
    ADD COLUMN last_fired_price NUMERIC(20, 9),
    ADD COLUMN updated_at       TIMESTAMPTZ    NOT NULL DEFAULT now(),
    ADD CONSTRAINT price_alerts_kind_check CHECK (kind IN ('crosses_above', 'crosses_below', 'moves_pct')),
    ADD CONSTRAINT price_alerts_window_check CHECK (
        CASE WHEN kind = 'moves_pct' THEN window_s BETWEEN 1 AND 86400 ELSE window_s IS NULL END),
    ADD CONSTRAINT price_alerts_hysteresis_check CHECK (
        hysteresis >= 0 AND (kind <> 'moves_pct' OR (hysteresis < threshold AND threshold <= 1000))),
    ADD CONSTRAINT price_alerts_state_check CHECK (state IN ('armed', 'fired')),
    ADD CONSTRAINT price_alerts_fired_count_check CHECK (fired_count >= 0),
    ADD CONSTRAINT price_alerts_symbol_check CHECK (symbol ~ '^[A-Z0-9][A-Z0-9._:/-]{0,31}$');
CREATE INDEX price_alerts_user_idx ON price_alerts (user_id, created_at, alert_id);

-- The inbox ----------------------------------------------------------------------------------
DROP POLICY notifications_owner ON notifications;
ALTER TABLE notifications DROP COLUMN channel, DROP COLUMN sent_at;
ALTER TABLE notifications RENAME COLUMN subject TO title;
ALTER TABLE notifications
    ADD COLUMN kind     TEXT        NOT NULL DEFAULT 'message',
    -- The firing's figures (symbol, price, threshold, ...) as strings, for clients.
    ADD COLUMN data     JSONB       NOT NULL DEFAULT '{}',
    ADD COLUMN alert_id UUID        REFERENCES price_alerts (alert_id) ON DELETE SET NULL,
    ADD COLUMN read_at  TIMESTAMPTZ,
    ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('message', 'alert_fired', 'webhook_disabled', 'ops_alert')),
    ADD CONSTRAINT notifications_title_check CHECK (length(title) BETWEEN 1 AND 200),
    ADD CONSTRAINT notifications_body_check CHECK (length(body) <= 2000);
CREATE INDEX notifications_user_time_idx ON notifications (user_id, created_at DESC, notification_id DESC);

-- Webhook endpoints --------------------------------------------------------------------------
-- The signing secret must be readable to sign with, so it cannot be hashed. It is stored
-- sealed (AES-256-GCM, services/notifications/sealing.py) under a key that lives in the
-- settings, never in the database, with the endpoint and user ids as associated data:
-- a backup, a dump or a read of this table yields no usable secret, and a sealed secret
-- copied onto another endpoint does not open. The API shows the secret once, at creation.
CREATE TABLE webhook_endpoints (
    endpoint_id          UUID        PRIMARY KEY,
    user_id              UUID        NOT NULL,
    url                  TEXT        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    description          TEXT        NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    secret_sealed        BYTEA       NOT NULL,
    consecutive_failures INTEGER     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    disabled_at          TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_id_user_key UNIQUE (endpoint_id, user_id)
);
CREATE INDEX webhook_endpoints_user_idx ON webhook_endpoints (user_id, created_at);

-- Deliveries ---------------------------------------------------------------------------------
-- One row per (notification, channel, endpoint): its id is derived from those, and
-- webhook_id is the Standard Webhooks message id, the receivers' idempotency key.
CREATE TABLE deliveries (
    delivery_id      UUID        PRIMARY KEY,
    user_id          UUID        NOT NULL,
    notification_id  UUID        NOT NULL,
    channel          TEXT        NOT NULL CHECK (channel IN ('inbox', 'webhook')),
    endpoint_id      UUID,
    webhook_id       TEXT,
    attempts         INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    status           TEXT        NOT NULL CHECK (status IN ('retrying', 'delivered', 'failed', 'abandoned')),
    last_status_code INTEGER,
    last_error       TEXT        CHECK (length(last_error) <= 200),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    CONSTRAINT deliveries_shape_check CHECK ((channel = 'webhook') = (endpoint_id IS NOT NULL AND webhook_id IS NOT NULL)),
    CONSTRAINT deliveries_endpoint_fkey FOREIGN KEY (endpoint_id, user_id)
        REFERENCES webhook_endpoints (endpoint_id, user_id) ON DELETE CASCADE
);
CREATE INDEX deliveries_endpoint_idx ON deliveries (endpoint_id, created_at) WHERE endpoint_id IS NOT NULL;

-- Operational alerts -------------------------------------------------------------------------
-- An admin (the session's role) subscribes to the system events routed to admins.
CREATE TABLE ops_subscriptions (
    user_id    UUID        PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Row-level security -------------------------------------------------------------------------
ALTER TABLE price_alerts FORCE ROW LEVEL SECURITY;
ALTER TABLE notifications FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries FORCE ROW LEVEL SECURITY;
ALTER TABLE ops_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE ops_subscriptions FORCE ROW LEVEL SECURITY;

CREATE POLICY price_alerts_acting_user ON price_alerts TO nexanest_notifications
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY notifications_acting_user ON notifications TO nexanest_notifications
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY webhook_endpoints_acting_user ON webhook_endpoints TO nexanest_notifications
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY deliveries_acting_user ON deliveries TO nexanest_notifications
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY ops_subscriptions_acting_user ON ops_subscriptions TO nexanest_notifications
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);

CREATE POLICY price_alerts_owner_role ON price_alerts TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY notifications_owner_role ON notifications TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY webhook_endpoints_owner_role ON webhook_endpoints TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY deliveries_owner_role ON deliveries TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY ops_subscriptions_owner_role ON ops_subscriptions TO CURRENT_USER USING (true) WITH CHECK (true);

-- What the service may do, and no more. An alert's owner and symbol never change (a new
-- alert is made instead); an inbox row changes only by being read; deliveries are never
-- deleted by the service (an endpoint's go with it). An alert's kind stays too.
GRANT SELECT, INSERT, DELETE ON price_alerts TO nexanest_notifications;
GRANT UPDATE (threshold, hysteresis, window_s, enabled, state, fired_count, last_fired_at,
              last_fired_price, updated_at) ON price_alerts TO nexanest_notifications;
GRANT SELECT, INSERT ON notifications TO nexanest_notifications;
GRANT UPDATE (read_at) ON notifications TO nexanest_notifications;
GRANT SELECT, INSERT, DELETE ON webhook_endpoints TO nexanest_notifications;
GRANT UPDATE (consecutive_failures, disabled_at) ON webhook_endpoints TO nexanest_notifications;
GRANT SELECT, INSERT ON deliveries TO nexanest_notifications;
GRANT UPDATE (attempts, status, last_status_code, last_error, updated_at, delivered_at)
    ON deliveries TO nexanest_notifications;
GRANT SELECT, INSERT, DELETE ON ops_subscriptions TO nexanest_notifications;

-- The worker's two ways across users -----------------------------------------------------------
CREATE FUNCTION notification_alerts_to_evaluate()
    RETURNS TABLE (alert_id UUID, user_id UUID, symbol TEXT, kind TEXT, threshold NUMERIC,
                   hysteresis NUMERIC, window_s INTEGER, state TEXT, fired_count BIGINT)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.alert_id, a.user_id, a.symbol, a.kind, a.threshold, a.hysteresis, a.window_s, a.state, a.fired_count
      FROM public.price_alerts a
     WHERE a.enabled
$$;
REVOKE ALL ON FUNCTION notification_alerts_to_evaluate() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notification_alerts_to_evaluate() TO nexanest_notifications;

CREATE FUNCTION notification_ops_subscribers()
    RETURNS TABLE (user_id UUID)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.user_id FROM public.ops_subscriptions s ORDER BY s.user_id
$$;
REVOKE ALL ON FUNCTION notification_ops_subscribers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notification_ops_subscribers() TO nexanest_notifications;
