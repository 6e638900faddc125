#!/usr/bin/env bash
# First start of the compose PostgreSQL: the four service databases, owned by
# nexanest, and a <db>_test twin of each for the test suite (tests/conftest.py),
# as deploy/local/postgres.sh makes them, and the services' login roles, which own
# nothing (the passwords come from the environment through \getenv).
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d auth <<'SQL'
\getenv auth_pw NEXANEST_AUTH_SERVICE_PASSWORD
\getenv portfolio_pw NEXANEST_PORTFOLIO_SERVICE_PASSWORD
\getenv analytics_pw NEXANEST_ANALYTICS_SERVICE_PASSWORD
\getenv notifications_pw NEXANEST_NOTIFICATIONS_SERVICE_PASSWORD
SELECT format('CREATE ROLE nexanest_auth LOGIN PASSWORD %L', :'auth_pw') \gexec
SELECT format('CREATE ROLE nexanest_portfolio LOGIN PASSWORD %L', :'portfolio_pw') \gexec
SELECT format('CREATE ROLE nexanest_analytics LOGIN PASSWORD %L', :'analytics_pw') \gexec
SELECT format('CREATE ROLE nexanest_notifications LOGIN PASSWORD %L', :'notifications_pw') \gexec
SQL
for db in auth portfolio analytics notifications auth_test portfolio_test analytics_test notifications_test; do
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d auth -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER nexanest', :'db')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', 'nexanest_' || split_part(:'db', '_', 1))
 WHERE split_part(:'db', '_', 1) IN ('auth', 'portfolio', 'analytics', 'notifications') \gexec
SQL
done

# The Prometheus exporter's login (postgres-exporter): pg_monitor and nothing else,
# at most 5 connections, as deploy/local/lib.sh pg_ensure_monitor_role makes it.
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d auth <<'SQL'
\getenv monitor_pw NEXANEST_MONITOR_PASSWORD
SELECT format('CREATE ROLE nexanest_monitor LOGIN CONNECTION LIMIT 5 PASSWORD %L', :'monitor_pw') \gexec
GRANT pg_monitor TO nexanest_monitor;
SQL
