#!/usr/bin/env bash
# First start of the compose PostgreSQL: the four service databases, owned by nexanest.
set -euo pipefail
for db in portfolio analytics notifications; do
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d auth -c "CREATE DATABASE $db OWNER nexanest"
done
for db in auth portfolio analytics notifications; do
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d auth -c "REVOKE ALL ON DATABASE $db FROM PUBLIC"
done
