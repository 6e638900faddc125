#!/usr/bin/env bash
# First start of the compose TimescaleDB: the same roles and database as
# deploy/local/timescaledb.sh (owner `timescale`, least-privilege `nexanest_ingest`).
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U postgres -d postgres \
  -v ts_pw="$NEXANEST_TIMESCALE_PASSWORD" -v ingest_pw="$NEXANEST_INGEST_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE timescale LOGIN PASSWORD %L', :'ts_pw') \gexec
SELECT format('CREATE ROLE nexanest_ingest LOGIN PASSWORD %L', :'ingest_pw') \gexec
CREATE DATABASE timescale OWNER timescale;
REVOKE ALL ON DATABASE timescale FROM PUBLIC;
GRANT CONNECT ON DATABASE timescale TO nexanest_ingest;
\c timescale
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
