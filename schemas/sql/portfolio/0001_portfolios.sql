-- Portfolio service: portfolios, holdings and transactions, each owned by a user.
-- Row-level security keys on `app.user_id`, set per transaction by the service layer.

CREATE TABLE portfolios (
    portfolio_id UUID        PRIMARY KEY,
    user_id      UUID        NOT NULL,
    name         TEXT        NOT NULL,
    currency     CHAR(3)     NOT NULL DEFAULT 'USD',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE holdings (
    portfolio_id UUID           NOT NULL REFERENCES portfolios (portfolio_id) ON DELETE CASCADE,
    user_id      UUID           NOT NULL,
    symbol       TEXT           NOT NULL,
    quantity     NUMERIC(20, 9) NOT NULL,
    cost_basis   NUMERIC(20, 9) NOT NULL,
    updated_at   TIMESTAMPTZ    NOT NULL DEFAULT now(),
    PRIMARY KEY (portfolio_id, symbol)
);

CREATE TABLE transactions (
    transaction_id UUID           PRIMARY KEY,
    portfolio_id   UUID           NOT NULL REFERENCES portfolios (portfolio_id) ON DELETE CASCADE,
    user_id        UUID           NOT NULL,
    symbol         TEXT           NOT NULL,
    side           TEXT           NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity       NUMERIC(20, 9) NOT NULL CHECK (quantity > 0),
    price          NUMERIC(20, 9) NOT NULL CHECK (price > 0),
    fees           NUMERIC(20, 9) NOT NULL DEFAULT 0,
    executed_at    TIMESTAMPTZ    NOT NULL
);
CREATE INDEX transactions_portfolio_time_idx ON transactions (portfolio_id, executed_at DESC);

ALTER TABLE portfolios ENABLE ROW LEVEL SECURITY;
ALTER TABLE holdings ENABLE ROW LEVEL SECURITY;
ALTER TABLE transactions ENABLE ROW LEVEL SECURITY;
CREATE POLICY portfolios_owner ON portfolios
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY holdings_owner ON holdings
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY transactions_owner ON transactions
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
