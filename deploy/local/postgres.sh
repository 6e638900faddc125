#!/usr/bin/env bash
# PostgreSQL 15 for the service databases (auth, portfolio, analytics, notifications)
# on 127.0.0.1:5432, owner role `nexanest`, and a <db>_test twin of each for the
# test suite. Usage: postgres.sh install|start|stop|status|logs
SERVICE_NAME=postgres
. "$(dirname "$0")/lib.sh"

PORT=5432
DATADIR="$STATE_DIR/postgres"
DATABASES=(auth portfolio analytics notifications)

cmd_install() { pg_install_server; }

cmd_start() {
  [ -x "$PG_BIN/postgres" ] || die "PostgreSQL $PG_VERSION is not installed: run '$0 install'"
  ensure_dirs
  pg_cluster_init "$DATADIR" "$PORT"
  pg_cluster_start "$DATADIR" "$PORT" postgres
  pg_ensure_role "$PORT" nexanest "$(env_value NEXANEST_POSTGRES_PASSWORD)"
  # The services' login roles: they own nothing, so the row-level security of
  # the tables (FORCEd by the migrations, which also grant them their tables) binds them.
  pg_ensure_role "$PORT" nexanest_auth "$(env_value NEXANEST_AUTH_SERVICE_PASSWORD)"
  pg_ensure_role "$PORT" nexanest_portfolio "$(env_value NEXANEST_PORTFOLIO_SERVICE_PASSWORD)"
  pg_ensure_role "$PORT" nexanest_analytics "$(env_value NEXANEST_ANALYTICS_SERVICE_PASSWORD)"
  pg_ensure_role "$PORT" nexanest_notifications "$(env_value NEXANEST_NOTIFICATIONS_SERVICE_PASSWORD)"
  pg_ensure_monitor_role "$PORT" # the Prometheus exporter's (prometheus.sh)
  local db
  # Each <db>_test is the test suite's (tests/conftest.py), so that running the
  # tests leaves the user's databases alone; same owner, created here because
  # creating a database takes the superuser.
  for db in "${DATABASES[@]}"; do
    pg_ensure_database "$PORT" "$db" nexanest
    pg_ensure_database "$PORT" "${db}_test" nexanest
  done
  for db in auth auth_test; do pg_grant_connect "$PORT" "$db" nexanest_auth; done
  for db in portfolio portfolio_test; do pg_grant_connect "$PORT" "$db" nexanest_portfolio; done
  for db in analytics analytics_test; do pg_grant_connect "$PORT" "$db" nexanest_analytics; done
  for db in notifications notifications_test; do pg_grant_connect "$PORT" "$db" nexanest_notifications; done
}

cmd_stop() { pg_cluster_stop "$DATADIR"; }
cmd_status() { pg_status_line "$DATADIR" "$PORT" postgres "databases ${DATABASES[*]}"; }
cmd_logs() { if [ "${1:-}" = -f ]; then tail -F "$LOG_DIR/postgres.log"; else tail -n 100 "$LOG_DIR/postgres.log"; fi; }

case "${1:-}" in
  install | start | stop | status | logs) cmd="cmd_$1"; shift; "$cmd" "$@" ;;
  *) echo "usage: $0 install|start|stop|status|logs [-f]" >&2; exit 2 ;;
esac
