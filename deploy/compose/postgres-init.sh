#!/usr/bin/env bash
# First start of the compose PostgreSQL: the four service databases, owned by
# nexanest, and a <db>_test twin of each for the test suite (tests/conftest.py),
# as deploy/local/postgres.sh makes them.
set -euo pipefail
for db in auth portfolio analytics notifications auth_test portfolio_test analytics_test notifications_test; do
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d auth -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER nexanest', :'db')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
done
