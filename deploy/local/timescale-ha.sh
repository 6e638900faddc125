#!/usr/bin/env bash
# A TimescaleDB that fails over, locally: a primary and a streaming replica of
# PostgreSQL 15 + TimescaleDB (the Apache build of timescaledb.sh), managed by
# Patroni (Debian's patroni 3.0) with a one-member etcd (Debian's etcd-server 3.4)
# as its consensus store. Beside the single cluster on 5433, which is never touched.
#
#   timescale-ha.sh install           packages (apt-get only when missing) and the extension
#   timescale-ha.sh start | stop | status
#   timescale-ha.sh primary           the primary's member name and port (exit 1 while there is none)
#   timescale-ha.sh kill-primary      SIGKILL the primary's postmaster (a crash; Patroni fails over)
#   timescale-ha.sh wait-healthy [S]  until a primary and a streaming replica (S seconds, default 120)
#   timescale-ha.sh sync on|off       synchronous replication (Patroni's synchronous_mode)
#   timescale-ha.sh pause-replication | resume-replication
#                                     SIGSTOP / SIGCONT the primary's WAL senders: its commits stop
#                                     reaching the replica, so a failover loses them (asynchronous
#                                     mode; the failover test uses it)
#   timescale-ha.sh hosts             the DSN's host list: 127.0.0.1:5441,127.0.0.1:5442
#   timescale-ha.sh wipe              stop, then delete the cluster's data (the next start bootstraps anew)
#   timescale-ha.sh logs N [-f]       member N's Patroni and PostgreSQL log (N = 1, 2, or etcd)
#
# Member N (1, 2): PostgreSQL on 127.0.0.1:544N, Patroni REST on 127.0.0.1:844N,
# data in $STATE_DIR/timescale-ha/node-N. etcd: client 127.0.0.1:2479, peer 2480.
# The pipeline connects with a multi-host DSN that accepts only the writable one:
#   postgresql://USER:PASSWORD@127.0.0.1:5441,127.0.0.1:5442/timescale?target_session_attrs=read-write
#
# The roles, databases and extension are the single cluster's (lib.sh ts_provision),
# created on the primary and streamed to the replica; `nexanest migrate` applies the
# same migrations through the DSN above. Replication is asynchronous unless
# NEXANEST_TIMESCALE_HA_SYNCHRONOUS=true at the first start (or `sync on` later).
# A crashed primary is failed over at once (primary_start_timeout 0) rather than
# restarted in place, and rejoins as a replica (pg_rewind).
SERVICE_NAME=timescale-ha
. "$(dirname "$0")/lib.sh"

HA_STATE="$STATE_DIR/timescale-ha"
HA_LOG_DIR="$LOG_DIR/timescale-ha"
HA_CREDENTIALS_FILE="$HA_STATE/secrets" # generated once, cluster-internal (replication, superuser, REST)
ETCD_DIR="$HA_STATE/etcd"
ETCD_PID_FILE="$HA_STATE/etcd.pid"
ETCD_CLIENT_PORT=2479
ETCD_PEER_PORT=2480
NODES=(1 2)
PG_PORT_BASE=5440   # member N: 5440 + N
REST_PORT_BASE=8440 # member N: 8440 + N
SCOPE=nexanest-timescale
PYTHON=/usr/bin/python3 # the system one, beside Patroni (not a virtual environment's)

pg_port() { echo $((PG_PORT_BASE + $1)); }
rest_port() { echo $((REST_PORT_BASE + $1)); }
node_dir() { echo "$HA_STATE/node-$1"; }
patroni_config() { echo "$(node_dir "$1")/patroni.yml"; }
patroni_pid_file() { echo "$(node_dir "$1")/patroni.pid"; }

hosts() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("127.0.0.1:$(pg_port "$n")"); done
  (IFS=,; printf '%s' "${out[*]}")
}

# pid_alive FILE: the pid in FILE when that process runs.
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null || return 1
  printf '%s' "$pid"
}

cmd_install() {
  pg_install_server
  apt_install etcd-server patroni
  "$LOCAL_DIR/timescaledb.sh" install
}

# One random value per cluster-internal secret, kept beside the data (0600, the
# service user's: Patroni reads them from its configuration). Never in .env, never logged.
ensure_secrets() {
  mkdir -p "$HA_STATE"
  if [ ! -s "$HA_CREDENTIALS_FILE" ]; then
    (
      umask 077
      printf 'superuser=%s\nreplication=%s\nrestapi=%s\n' \
        "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" >"$HA_CREDENTIALS_FILE"
    )
  fi
  chmod 600 "$HA_CREDENTIALS_FILE"
}

secret() { sed -n "s/^$1=//p" "$HA_CREDENTIALS_FILE"; }

# --- etcd -----------------------------------------------------------------------

start_etcd() {
  local pid
  if pid=$(pid_alive "$ETCD_PID_FILE"); then
    log "etcd already running (pid $pid)"
    return 0
  fi
  port_open "$ETCD_CLIENT_PORT" && die "port $ETCD_CLIENT_PORT is taken by another process (not our etcd)"
  mkdir -p "$ETCD_DIR" "$HA_LOG_DIR"
  chmod 700 "$ETCD_DIR"
  log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
  # One member on loopback: Patroni's leader key lives here. setsid: it outlives this shell.
  setsid nohup etcd --name nexanest-ha --data-dir "$ETCD_DIR/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "nexanest-ha=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-token nexanest-ha --initial-cluster-state new \
    --listen-metrics-urls "" \
    >>"$HA_LOG_DIR/etcd.log" 2>&1 </dev/null &
  echo "$!" >"$ETCD_PID_FILE"
  local waited=0
  until curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
    kill -0 "$(cat "$ETCD_PID_FILE")" 2>/dev/null || { tail -n 20 "$HA_LOG_DIR/etcd.log" >&2; die "etcd exited"; }
    [ "$waited" -ge 300 ] && die "etcd not healthy after 30s (log: $HA_LOG_DIR/etcd.log)"
    sleep 0.1
    waited=$((waited + 1))
  done
}

# stop_pid FILE NAME: SIGTERM, then SIGKILL after 60 s.
stop_pid() {
  local pid
  if ! pid=$(pid_alive "$1"); then
    rm -f "$1"
    return 0
  fi
  log "stopping $2 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  await_exit 60 "$2" "$pid"
  rm -f "$1"
}

# --- Patroni ----------------------------------------------------------------------

write_patroni_config() {
  local n=$1 dir sync
  dir=$(node_dir "$n")
  mkdir -p "$dir"
  sync=$(env_setting NEXANEST_TIMESCALE_HA_SYNCHRONOUS false)
  case "$sync" in true | false) ;; *) die "NEXANEST_TIMESCALE_HA_SYNCHRONOUS must be true or false, not '$sync'" ;; esac
  (
    umask 077
    cat >"$dir/patroni.yml" <<EOF
# Written by deploy/local/timescale-ha.sh on every start; edit the script, not this file.
scope: $SCOPE
namespace: /nexanest/
name: node-$n

restapi:
  listen: 127.0.0.1:$(rest_port "$n")
  connect_address: 127.0.0.1:$(rest_port "$n")
  authentication: # for the unsafe methods (switchover, configuration changes)
    username: patroni
    password: '$(secret restapi)'

etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT_PORT

bootstrap:
  # The cluster-wide settings, stored in etcd at the first start (later: \`sync on|off\`).
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    # A crashed primary is failed over at once, not restarted in place first (300 s).
    primary_start_timeout: 0
    # A replica further behind than 64 MiB is not promoted (asynchronous mode): the
    # bound on what a failover may lose. With a batch of ticks a few MiB of WAL,
    # the default 1 MiB would refuse the failover under load.
    maximum_lag_on_failover: 67108864
    synchronous_mode: $sync
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        wal_log_hints: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
        max_connections: 200
        max_worker_processes: 20
        max_parallel_workers: 8
        timescaledb.max_background_workers: 8
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - auth-local: peer
    - auth-host: scram-sha-256

postgresql:
  listen: 127.0.0.1:$(pg_port "$n")
  connect_address: 127.0.0.1:$(pg_port "$n")
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  use_unix_socket: true
  authentication:
    superuser:
      username: postgres
      password: '$(secret superuser)'
    replication:
      username: replicator
      password: '$(secret replication)'
  parameters:
    unix_socket_directories: '$RUN_DIR'
    password_encryption: scram-sha-256
    shared_preload_libraries: timescaledb
    timescaledb.telemetry_level: 'off'
    shared_buffers: 256MB
    wal_compression: 'on'
    max_wal_size: 2GB
    logging_collector: 'off'
  # Loopback only, scram passwords over TCP, peer for the local superuser socket.
  pg_hba:
    - local all postgres peer
    - local all all scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
EOF
  )
  if is_root; then chown -R "$SERVICE_USER" "$dir"; fi
}

launch_patroni() {
  local n=$1 pid file port
  file=$(patroni_pid_file "$n")
  if pid=$(pid_alive "$file"); then
    log "member $n already running (Patroni pid $pid)"
    return 0
  fi
  for port in "$(pg_port "$n")" "$(rest_port "$n")"; do
    port_open "$port" && die "port $port is taken by another process (not member $n)"
  done
  write_patroni_config "$n"
  mkdir -p "$HA_LOG_DIR"
  if is_root; then chown "$SERVICE_USER" "$HA_LOG_DIR"; fi
  log "starting member $n (PostgreSQL 127.0.0.1:$(pg_port "$n"), Patroni REST 127.0.0.1:$(rest_port "$n"))"
  # setpriv execs Patroni itself as the service user (runuser would stay as its parent),
  # so the pid file names Patroni; PostgreSQL runs as its child.
  local as=()
  if is_root; then as=(setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups); fi
  setsid nohup "${as[@]}" patroni "$(patroni_config "$n")" \
    >>"$HA_LOG_DIR/node-$n.log" 2>&1 </dev/null &
  echo "$!" >"$file"
}

# GET a member's REST endpoint (Patroni answers GETs without authentication).
rest_get() { curl -fsS --max-time 2 "http://127.0.0.1:$(rest_port "$1")/$2" 2>/dev/null; }

# The cluster as any live member sees it: "name role state port" per member.
members() {
  local n json
  for n in "${NODES[@]}"; do
    if json=$(rest_get "$n" cluster); then
      printf '%s' "$json" | "$PYTHON" -c '
import json, sys
for m in json.load(sys.stdin).get("members", []):
    print(m["name"], m["role"], m["state"], m.get("port", "-"), m.get("lag", 0))'
      return 0
    fi
  done
  return 1
}

# The primary's "name port", when there is one that runs.
primary() { members | awk '$2 == "leader" && $3 == "running" {print $1, $4; found=1} END {exit !found}'; }

# "application_name state sync_state" of each replica streaming from the primary
# (Patroni 3.0.2's /cluster says "running" for a replica that does not stream yet).
replication() {
  local name port
  read -r name port < <(primary) || return 1
  rest_get "${name#node-}" "" | "$PYTHON" -c '
import json, sys
for r in json.load(sys.stdin).get("replication", []):
    print(r["application_name"], r["state"], r["sync_state"])'
}

# A primary and every other member streaming from it.
healthy() {
  local streaming
  streaming=$(replication | awk '$2 == "streaming"' | wc -l) || return 1
  [ "$streaming" -eq $((${#NODES[@]} - 1)) ]
}

cmd_wait_healthy() {
  local timeout_s=${1:-120} started=$SECONDS
  until healthy; do
    if [ $((SECONDS - started)) -ge "$timeout_s" ]; then
      members >&2 || true
      die "no primary with a streaming replica after ${timeout_s}s (logs: $HA_LOG_DIR)"
    fi
    sleep 0.2
  done
}

cmd_start() {
  cmd_install # each step returns at once when installed
  env_value NEXANEST_TIMESCALE_PASSWORD >/dev/null # a missing .env fails before anything starts
  ensure_dirs
  ensure_secrets
  if is_root; then chown "$SERVICE_USER" "$HA_STATE" "$HA_CREDENTIALS_FILE"; fi
  start_etcd
  # The first member bootstraps (initdb) when the cluster is new; the second waits
  # for it in etcd and clones it with pg_basebackup.
  local n
  for n in "${NODES[@]}"; do launch_patroni "$n"; done
  local started=$SECONDS
  until primary >/dev/null; do
    [ $((SECONDS - started)) -ge 120 ] && { tail -n 30 "$HA_LOG_DIR/node-1.log" >&2; die "no primary after 120s"; }
    sleep 0.2
  done
  local name port
  read -r name port < <(primary)
  ts_provision "$port"
  cmd_wait_healthy 180
  log "ready: primary $name on 127.0.0.1:$port; DSN hosts $(hosts), target_session_attrs=read-write"
}

cmd_stop() {
  local n
  # The replicas first, then the primary: no failover while the cluster goes down.
  local order=()
  local leader=""
  leader=$(primary 2>/dev/null | awk '{print $1}') || true
  for n in "${NODES[@]}"; do [ "node-$n" = "$leader" ] || order+=("$n"); done
  for n in "${NODES[@]}"; do [ "node-$n" = "$leader" ] && order+=("$n"); done
  for n in "${order[@]}"; do stop_pid "$(patroni_pid_file "$n")" "member $n (Patroni and its PostgreSQL)"; done
  stop_pid "$ETCD_PID_FILE" etcd
  log "stopped"
}

cmd_status() {
  local n rc=0 line
  for n in "${NODES[@]}"; do
    if pid_alive "$(patroni_pid_file "$n")" >/dev/null; then
      line=$(members 2>/dev/null | awk -v name="node-$n" '$1 == name {print $2, $3, "lag", $5}') || true
      printf '%-12s up     %-30s port %-5s REST %s\n' "ts-ha-node-$n" "${line:-unknown}" "$(pg_port "$n")" "$(rest_port "$n")"
    else
      printf '%-12s down   %-30s port %-5s\n' "ts-ha-node-$n" "" "$(pg_port "$n")"
      rc=1
    fi
  done
  if pid_alive "$ETCD_PID_FILE" >/dev/null; then
    printf '%-12s up     %-30s port %-5s\n' "ts-ha-etcd" "" "$ETCD_CLIENT_PORT"
  else
    printf '%-12s down   %-30s port %-5s\n' "ts-ha-etcd" "" "$ETCD_CLIENT_PORT"
    rc=1
  fi
  return $rc
}

cmd_kill_primary() {
  local name port pid datadir
  read -r name port < <(primary) || die "no running primary"
  datadir="$(node_dir "${name#node-}")/data"
  pid=$(head -n 1 "$datadir/postmaster.pid") || die "no postmaster.pid in $datadir"
  kill -KILL "$pid"
  log "primary $name (port $port): postmaster pid $pid killed (SIGKILL)"
  echo "$name"
}

# pause-replication: SIGSTOP the primary's WAL senders (every "walsender" process
# of this cluster, found by the cluster_name in its process title) and note their
# pids: from then on the primary commits what no replica receives. resume-replication
# sends SIGCONT to the noted ones, even when their postmaster has died since (an
# orphaned sender then notices and exits; until it does, no member restarts there).
PAUSED_FILE="$HA_STATE/paused-walsenders"

cmd_pause_replication() {
  local pids
  pids=$(pgrep -f "^postgres: $SCOPE: walsender") || die "no WAL sender found (is a replica streaming?)"
  printf '%s\n' $pids >>"$PAUSED_FILE"
  # shellcheck disable=SC2086  # one pid per word
  kill -STOP $pids
  log "WAL senders paused: $(echo $pids)"
}

cmd_resume_replication() {
  local pid
  [ -s "$PAUSED_FILE" ] || { log "no paused WAL sender"; return 0; }
  while read -r pid; do kill -CONT "$pid" 2>/dev/null || true; done <"$PAUSED_FILE"
  log "WAL senders resumed: $(tr '\n' ' ' <"$PAUSED_FILE")"
  rm -f "$PAUSED_FILE"
}

cmd_sync() {
  local value
  case "${1:-}" in on) value=true ;; off) value=false ;; *) die "usage: $0 sync on|off" ;; esac
  local n
  n=$(primary | awk '{print $1}') || die "no running primary"
  # patronictl reads the REST password from the member's configuration (not argv).
  as_service_user patronictl -c "$(patroni_config "${n#node-}")" edit-config --force \
    --set "synchronous_mode=$value" >/dev/null
  if [ "$value" = true ]; then
    local started=$SECONDS
    until replication | grep -q ' streaming sync$'; do
      [ $((SECONDS - started)) -ge 60 ] && die "no synchronous standby after 60s"
      sleep 0.2
    done
  else
    local started=$SECONDS
    # Patroni applies it on its next cycle (a reload): wait until the primary says so.
    until replication | grep -q ' streaming async$'; do
      [ $((SECONDS - started)) -ge 60 ] && die "the standby is still synchronous after 60s"
      sleep 0.2
    done
  fi
  log "synchronous_mode: $value"
}

cmd_wipe() {
  cmd_stop
  log "deleting $HA_STATE"
  rm -rf "$HA_STATE"
}

cmd_logs() {
  local file
  case "${1:-}" in
    1 | 2) file="$HA_LOG_DIR/node-$1.log" ;;
    etcd) file="$HA_LOG_DIR/etcd.log" ;;
    *) die "usage: $0 logs 1|2|etcd [-f]" ;;
  esac
  [ -f "$file" ] || die "no log yet ($file)"
  if [ "${2:-}" = -f ]; then exec tail -n 50 -F "$file"; else tail -n 100 "$file"; fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  primary) primary ;;
  kill-primary) cmd_kill_primary ;;
  wait-healthy) cmd_wait_healthy "${2:-120}" ;;
  sync) cmd_sync "${2:-}" ;;
  hosts) hosts; echo ;;
  pause-replication) cmd_pause_replication ;;
  resume-replication) cmd_resume_replication ;;
  wipe) cmd_wipe ;;
  logs) shift; cmd_logs "$@" ;;
  *)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
