# shellcheck shell=bash
# Shared helpers for the deploy/local service scripts. Sourced, never executed.
#
# Layout outside the clone (so a fresh clone reuses builds and data):
#   $NEXANEST_STATE_DIR   data directories, sockets, pid files, logs
#   $NEXANEST_CACHE_DIR   downloads and builds (TimescaleDB build, Kafka jars)
# As root both live under /var (the postgres user must be able to reach them);
# as an ordinary user they live under the XDG directories.

set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL_DIR="$REPO_DIR/deploy/local"
ENV_FILE="${NEXANEST_ENV_FILE:-$REPO_DIR/.env}"

if [ "$(id -u)" -eq 0 ]; then
  : "${NEXANEST_STATE_DIR:=/var/lib/nexanest}"
  : "${NEXANEST_CACHE_DIR:=/var/cache/nexanest}"
  SERVICE_USER=postgres
else
  : "${NEXANEST_STATE_DIR:=${XDG_DATA_HOME:-$HOME/.local/share}/nexanest}"
  : "${NEXANEST_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/nexanest}"
  SERVICE_USER=$(id -un)
fi
STATE_DIR=$NEXANEST_STATE_DIR
CACHE_DIR=$NEXANEST_CACHE_DIR
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/log"

PG_VERSION="${NEXANEST_PG_VERSION:-15}"
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"

log() { printf '[%s] %s\n' "${SERVICE_NAME:-stack}" "$*" >&2; }
die() { printf '[%s] error: %s\n' "${SERVICE_NAME:-stack}" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the user that owns the database clusters (postgres refuses root).
as_service_user() {
  if is_root; then runuser -u "$SERVICE_USER" -- "$@"; else "$@"; fi
}

ensure_dirs() {
  mkdir -p "$STATE_DIR" "$CACHE_DIR" "$RUN_DIR" "$LOG_DIR"
  chmod 755 "$STATE_DIR" "$RUN_DIR" "$LOG_DIR"
  # On a fresh machine the postgres user only exists once postgresql is installed;
  # each service's start calls ensure_dirs again after its install.
  if is_root && id -u "$SERVICE_USER" >/dev/null 2>&1; then chown "$SERVICE_USER" "$RUN_DIR" "$LOG_DIR"; fi
}

# apt-get install only what is missing; `apt-get update` at most once per run.
_APT_UPDATED=0
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  is_root || die "missing Debian packages (${missing[*]}); run as root or install them"
  if [ "$_APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq
    _APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# await_exit SECONDS LABEL PID...: wait until every PID has exited (after the caller's
# SIGTERM); whatever still runs after SECONDS gets SIGKILL. One deadline for all, so
# processes that must stop together (a controller quorum) are waited for together.
await_exit() {
  local seconds=$1 label=$2 pid tenths=0
  shift 2
  while :; do
    local alive=()
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    if [ "$tenths" -ge $((seconds * 10)) ]; then
      log "$label (pid ${alive[*]}) still running after ${seconds}s: SIGKILL"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      sleep 1
      return 0
    fi
    sleep 0.1
    tenths=$((tenths + 1))
  done
}

wait_for_port() {
  local port=$1 timeout_s=${2:-60} waited=0
  until port_open "$port"; do
    [ "$waited" -ge "$timeout_s" ] && return 1
    sleep 1
    waited=$((waited + 1))
  done
}

# Read KEY from the .env file without sourcing it (values are never echoed).
env_value() {
  [ -f "$ENV_FILE" ] || die "$ENV_FILE is missing: run deploy/local/env.sh first"
  local line
  line=$(grep -E "^$1=" "$ENV_FILE" | tail -n 1) || die "$1 is not set in $ENV_FILE"
  printf '%s' "${line#*=}"
}

# env_setting NAME DEFAULT: a (non-secret) NEXANEST_* setting as pipeline/settings.py
# reads it: the environment first, then .env, else DEFAULT.
env_setting() {
  local value=${!1:-}
  if [ -z "$value" ] && [ -f "$ENV_FILE" ]; then
    value=$(grep -E "^$1=" "$ENV_FILE" | tail -n 1 | cut -d= -f2-) || true
  fi
  printf '%s' "${value:-$2}"
}

# ---------------------------------------------------------------------------
# PostgreSQL clusters (used by postgres.sh and timescaledb.sh).
# A cluster is a data directory we own, started with pg_ctl on loopback,
# with its unix socket in $RUN_DIR. No systemd, no pg_createcluster.

pg_install_server() {
  # Debian's postgresql-NN package creates and (under systemd) starts a "main"
  # cluster on the first free port, which could take 5433 from TimescaleDB.
  # We run our own clusters, so tell postgresql-common not to create one.
  apt_install postgresql-common
  local conf=/etc/postgresql-common/createcluster.conf
  if is_root && [ -f "$conf" ] && ! grep -qE '^create_main_cluster *= *false' "$conf"; then
    printf '\n# nexanest: clusters are created by deploy/local\ncreate_main_cluster = false\n' >>"$conf"
  fi
  apt_install "postgresql-$PG_VERSION" "postgresql-client-$PG_VERSION"
}

# pg_cluster_init DATADIR PORT [EXTRA_CONF_LINE...]
pg_cluster_init() {
  local datadir=$1 port=$2
  shift 2
  if [ -f "$datadir/PG_VERSION" ]; then return 0; fi
  log "initdb $datadir"
  mkdir -p "$datadir"
  if is_root; then chown "$SERVICE_USER" "$datadir"; fi
  chmod 700 "$datadir"
  as_service_user "$PG_BIN/initdb" -D "$datadir" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  {
    echo "# nexanest local settings"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$RUN_DIR'"
    echo "password_encryption = 'scram-sha-256'"
    echo "max_connections = 200"
    echo "shared_buffers = 512MB"
    echo "wal_compression = on"
    echo "max_wal_size = 4GB"
    echo "logging_collector = off"
    for line in "$@"; do echo "$line"; done
  } | as_service_user tee -a "$datadir/postgresql.conf" >/dev/null
  # Loopback only, scram passwords for TCP, peer for the local superuser socket.
  as_service_user tee "$datadir/pg_hba.conf" >/dev/null <<EOF
local   all   postgres                 peer
local   all   all                      scram-sha-256
host    all   all      127.0.0.1/32    scram-sha-256
host    all   all      ::1/128         scram-sha-256
EOF
}

# pg_cluster_start DATADIR PORT NAME
pg_cluster_start() {
  local datadir=$1 port=$2 name=$3
  if as_service_user "$PG_BIN/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    log "already running on port $port"
    return 0
  fi
  if port_open "$port"; then
    die "port $port is taken by another process (not our $name cluster in $datadir)"
  fi
  log "starting on 127.0.0.1:$port"
  as_service_user "$PG_BIN/pg_ctl" -D "$datadir" -l "$LOG_DIR/$name.log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$LOG_DIR/$name.log" >&2; die "could not start $name"; }
}

pg_cluster_stop() {
  local datadir=$1
  if [ -f "$datadir/PG_VERSION" ] && as_service_user "$PG_BIN/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    log "stopping"
    as_service_user "$PG_BIN/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null
  else
    log "not running"
  fi
}

# pg_sql PORT DB SQL...: run SQL as the superuser over the unix socket. Extra psql
# variables can be passed before the SQL as -v name=value; use :'name' in SQL so
# values are quoted by psql, never interpolated by the shell. Never pass a secret
# with -v: a command line is visible to every local user (ps, /proc/*/cmdline);
# put it in psql's environment and read it with \getenv (see pg_ensure_role).
pg_sql() {
  local port=$1 db=$2
  shift 2
  as_service_user "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN_DIR" -p "$port" -U postgres -d "$db" "$@"
}

# pg_ensure_role PORT ROLE PASSWORD [ATTRS]: create or update a login role. The
# password reaches psql in its environment (runuser keeps it), never its argv.
pg_ensure_role() {
  local port=$1 role=$2 password=$3 attrs=${4:-}
  NEXANEST_ROLE_PASSWORD=$password pg_sql "$port" postgres -v role="$role" <<EOF
\getenv pw NEXANEST_ROLE_PASSWORD
SELECT format('CREATE ROLE %I LOGIN $attrs', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'role', :'pw') \gexec
EOF
}

# pg_ensure_monitor_role PORT: nexanest_monitor, the login role of the Prometheus
# exporters (prometheus.sh): member of pg_monitor (statistics, sizes, settings;
# read-only) and nothing else, at most 5 connections. Its password is
# NEXANEST_MONITOR_PASSWORD; a .env from before it (env.sh adds it) only skips the role.
pg_ensure_monitor_role() {
  local port=$1 monitor_pw
  if ! grep -qE '^NEXANEST_MONITOR_PASSWORD=' "$ENV_FILE" 2>/dev/null; then
    log "no NEXANEST_MONITOR_PASSWORD in $ENV_FILE (deploy/local/env.sh adds it): monitoring role skipped"
    return 0
  fi
  monitor_pw=$(env_value NEXANEST_MONITOR_PASSWORD)
  pg_ensure_role "$port" nexanest_monitor "$monitor_pw" "CONNECTION LIMIT 5"
  pg_sql "$port" postgres -v role=nexanest_monitor <<'EOF'
SELECT format('GRANT pg_monitor TO %I', :'role')
 WHERE NOT pg_has_role(:'role', 'pg_monitor', 'MEMBER') \gexec
EOF
}

# pg_ensure_database PORT DB OWNER
pg_ensure_database() {
  local port=$1 db=$2 owner=$3
  pg_sql "$port" postgres -v db="$db" -v owner="$owner" <<'EOF'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
EOF
}

# pg_grant_connect PORT DB ROLE: ROLE may connect to DB (PUBLIC may not: pg_ensure_database).
pg_grant_connect() {
  pg_sql "$1" postgres -v db="$2" -v role="$3" <<'EOF'
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'role') \gexec
EOF
}

pg_status_line() {
  local datadir=$1 port=$2 name=$3 extra=${4:-}
  if [ -f "$datadir/PG_VERSION" ] && as_service_user "$PG_BIN/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    local version
    version=$(pg_sql "$port" postgres -At -c 'SHOW server_version' 2>/dev/null | cut -d' ' -f1)
    printf '%-12s up     version %-10s port %-5s %s\n' "$name" "$version" "$port" "$extra"
  else
    printf '%-12s down   %-18s port %-5s\n' "$name" "" "$port"
    return 1
  fi
}

# ts_provision PORT: the roles, databases, grants and extension of a TimescaleDB
# cluster (timescaledb.sh's on 5433, timescale-ha.sh's primary), so every cluster
# the pipeline may write to has the same least-privilege roles. Run as the
# superuser over the unix socket; idempotent.
ts_provision() {
  local port=$1 db
  pg_ensure_role "$port" timescale "$(env_value NEXANEST_TIMESCALE_PASSWORD)"
  pg_ensure_role "$port" nexanest_ingest "$(env_value NEXANEST_INGEST_PASSWORD)"
  # The services' roles here: portfolio writes its snapshots, market data only reads,
  # analytics reads the bars and snapshots and writes its metrics.
  pg_ensure_role "$port" nexanest_portfolio "$(env_value NEXANEST_PORTFOLIO_SERVICE_PASSWORD)"
  pg_ensure_role "$port" nexanest_market_data "$(env_value NEXANEST_MARKET_DATA_SERVICE_PASSWORD)"
  pg_ensure_role "$port" nexanest_analytics "$(env_value NEXANEST_ANALYTICS_SERVICE_PASSWORD)"
  pg_ensure_monitor_role "$port" # the Prometheus exporter's (prometheus.sh)
  # timescale_test is the test suite's (tests/conftest.py): the same owner, grants
  # and extension as the user's database, so the tests see what the pipeline sees
  # and leave the user's data alone. Creating a database and the extension takes
  # the superuser, which only these scripts have.
  for db in timescale timescale_test; do
    pg_ensure_database "$port" "$db" timescale
    pg_sql "$port" "$db" -v db="$db" <<'SQL'
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', role)
  FROM unnest(ARRAY['nexanest_ingest', 'nexanest_portfolio', 'nexanest_market_data', 'nexanest_analytics']) AS role \gexec
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS timescaledb;
SQL
  done
}
