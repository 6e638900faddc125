#!/usr/bin/env bash
# Redis on 127.0.0.1:6379 with 16 databases and a generated password.
# Usage: redis.sh install|start|stop|status|logs
SERVICE_NAME=redis
. "$(dirname "$0")/lib.sh"

PORT=6379
DATADIR="$STATE_DIR/redis"
CONF="$DATADIR/redis.conf"
PIDFILE="$RUN_DIR/redis.pid"

cmd_install() { apt_install redis-server redis-tools; }

redis_cli() { REDISCLI_AUTH=$(env_value NEXANEST_REDIS_PASSWORD) redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning "$@"; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

cmd_start() {
  command -v redis-server >/dev/null || die "redis-server is not installed: run '$0 install'"
  ensure_dirs
  mkdir -p "$DATADIR"
  if running; then
    if redis_cli ping 2>/dev/null | grep -q PONG; then log "already running on port $PORT"; return 0; fi
    # Started with another password (.env was made anew): its config file is ours, restart it with .env's.
    log "running with a password other than .env's; restarting it"
    cmd_stop
  fi
  if port_open "$PORT"; then die "port $PORT is taken by another process"; fi
  # The password goes into a mode-600 config file, never onto a command line.
  (
    umask 077
    cat >"$CONF" <<CONF
bind 127.0.0.1 ::1
port $PORT
protected-mode yes
daemonize yes
pidfile $PIDFILE
logfile $LOG_DIR/redis.log
dir $DATADIR
databases 16
appendonly yes
appendfsync everysec
save 900 1 300 10
requirepass $(env_value NEXANEST_REDIS_PASSWORD)
CONF
  )
  log "starting on 127.0.0.1:$PORT"
  redis-server "$CONF"
  local waited=0
  until redis_cli ping 2>/dev/null | grep -q PONG; do
    [ "$waited" -ge 30 ] && { tail -n 20 "$LOG_DIR/redis.log" >&2; die "redis did not answer within 30 s"; }
    sleep 1
    waited=$((waited + 1))
  done
}

cmd_stop() {
  if running; then
    log "stopping"
    redis_cli shutdown >/dev/null 2>&1 || true
    local waited=0
    while running && [ "$waited" -lt 10 ]; do sleep 1; waited=$((waited + 1)); done
    # SHUTDOWN needs .env's password; a server started with another one gets SIGTERM
    # (Redis saves and exits on it just the same).
    if running; then
      kill "$(cat "$PIDFILE")"
      while running && [ "$waited" -lt 40 ]; do sleep 1; waited=$((waited + 1)); done
    fi
    if running; then die "redis (pid $(cat "$PIDFILE")) did not stop"; fi
  else
    log "not running"
  fi
}

cmd_status() {
  if running && redis_cli ping 2>/dev/null | grep -q PONG; then
    local version
    version=$(redis_cli info server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p')
    printf '%-12s up     version %-10s port %-5s databases 16\n' redis "$version" "$PORT"
  else
    printf '%-12s down   %-18s port %-5s\n' redis "" "$PORT"
    return 1
  fi
}

cmd_logs() { if [ "${1:-}" = -f ]; then tail -F "$LOG_DIR/redis.log"; else tail -n 100 "$LOG_DIR/redis.log"; fi; }

case "${1:-}" in
  install | start | stop | status | logs) cmd="cmd_$1"; shift; "$cmd" "$@" ;;
  *) echo "usage: $0 install|start|stop|status|logs [-f]" >&2; exit 2 ;;
esac
