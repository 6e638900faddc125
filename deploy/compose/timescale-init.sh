#!/usr/bin/env bash
# First start of the compose TimescaleDB: the same roles and databases as
# deploy/local/timescaledb.sh (owner `timescale`, least-privilege `nexanest_ingest` and the services'
# `nexanest_portfolio`, `nexanest_market_data` and `nexanest_analytics`,
# database `timescale` and the test suite's `timescale_test`). The passwords come
# from the environment through \getenv, never from psql's command line.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U postgres -d postgres <<'SQL'
\getenv ts_pw NEXANEST_TIMESCALE_PASSWORD
\getenv ingest_pw NEXANEST_INGEST_PASSWORD
\getenv portfolio_pw NEXANEST_PORTFOLIO_SERVICE_PASSWORD
\getenv market_pw NEXANEST_MARKET_DATA_SERVICE_PASSWORD
\getenv analytics_pw NEXANEST_ANALYTICS_SERVICE_PASSWORD
SELECT format('CREATE ROLE timescale LOGIN PASSWORD %L', :'ts_pw') \gexec
SELECT format('CREATE ROLE nexanest_ingest LOGIN PASSWORD %L', :'ingest_pw') \gexec
SELECT format('CREATE ROLE nexanest_portfolio LOGIN PASSWORD %L', :'portfolio_pw') \gexec
SELECT format('CREATE ROLE nexanest_market_data LOGIN PASSWORD %L', :'market_pw') \gexec
SELECT format('CREATE ROLE nexanest_analytics LOGIN PASSWORD %L', :'analytics_pw') \gexec
SQL
for db in timescale timescale_test; do
  psql -v ON_ERROR_STOP=1 -U postgres -d postgres -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER timescale', :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', role)
  FROM unnest(ARRAY['nexanest_ingest', 'nexanest_portfolio', 'nexanest_market_data', 'nexanest_analytics']) AS role \gexec
SQL
  psql -v ON_ERROR_STOP=1 -U postgres -d "$db" -c 'CREATE EXTENSION IF NOT EXISTS timescaledb'
done

# The Prometheus exporter's login (postgres-exporter): pg_monitor and nothing else,
# at most 5 connections, as deploy/local/lib.sh pg_ensure_monitor_role makes it.
psql -v ON_ERROR_STOP=1 -U postgres -d postgres <<'SQL'
\getenv monitor_pw NEXANEST_MONITOR_PASSWORD
SELECT format('CREATE ROLE nexanest_monitor LOGIN CONNECTION LIMIT 5 PASSWORD %L', :'monitor_pw') \gexec
GRANT pg_monitor TO nexanest_monitor;
SQL
