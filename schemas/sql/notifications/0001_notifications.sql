-- Notification service: price alerts and the notifications they produce.

CREATE TABLE price_alerts (
    alert_id     UUID           PRIMARY KEY,
    user_id      UUID           NOT NULL,
    symbol       TEXT           NOT NULL,
    condition    TEXT           NOT NULL CHECK (condition IN ('above', 'below')),
    threshold    NUMERIC(20, 9) NOT NULL CHECK (threshold > 0),
    active       BOOLEAN        NOT NULL DEFAULT true,
    created_at   TIMESTAMPTZ    NOT NULL DEFAULT now()
);
CREATE INDEX price_alerts_symbol_idx ON price_alerts (symbol) WHERE active;

CREATE TABLE notifications (
    notification_id UUID        PRIMARY KEY,
    user_id         UUID        NOT NULL,
    channel         TEXT        NOT NULL CHECK (channel IN ('email', 'push', 'webhook')),
    subject         TEXT        NOT NULL,
    body            TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ
);

ALTER TABLE price_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
CREATE POLICY price_alerts_owner ON price_alerts
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY notifications_owner ON notifications
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
