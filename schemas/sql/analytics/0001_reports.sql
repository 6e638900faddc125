-- Analytics service: computed portfolio metrics, per user.

CREATE TABLE portfolio_metrics (
    portfolio_id UUID           NOT NULL,
    user_id      UUID           NOT NULL,
    as_of        TIMESTAMPTZ    NOT NULL,
    metric       TEXT           NOT NULL,
    value        NUMERIC(20, 9) NOT NULL,
    PRIMARY KEY (portfolio_id, metric, as_of)
);

ALTER TABLE portfolio_metrics ENABLE ROW LEVEL SECURITY;
CREATE POLICY portfolio_metrics_owner ON portfolio_metrics
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
