-- Auth service: users and their sessions' durable record.
-- Row-level security: a service connection sets `app.user_id` for the end user it
-- acts for; rows of other users are invisible to it.

CREATE EXTENSION IF NOT EXISTS citext;

CREATE TABLE users (
    user_id       UUID        PRIMARY KEY,
    email         CITEXT      NOT NULL UNIQUE,
    password_hash TEXT        NOT NULL,
    display_name  TEXT        NOT NULL DEFAULT '',
    is_active     BOOLEAN     NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE user_profiles (
    user_id        UUID        PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    base_currency  CHAR(3)     NOT NULL DEFAULT 'USD',
    timezone       TEXT        NOT NULL DEFAULT 'UTC',
    risk_tolerance TEXT        NOT NULL DEFAULT 'moderate'
        CHECK (risk_tolerance IN ('conservative', 'moderate', 'aggressive')),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE user_profiles ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_profiles_owner ON user_profiles
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
