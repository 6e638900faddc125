#!/usr/bin/env bash
# The HTTP services (auth :8001, portfolio :8002, market-data :8003,
# notifications :8004, analytics :8005), each a
# `nexanest serve` process in the background on loopback, started from the
# project's .venv with its .env. Logs: $LOG_DIR/service-<name>.log.
# Usage: services.sh start|stop|status|logs [NAME...]   (default: all of them)
SERVICE_NAME=services
. "$(dirname "$0")/lib.sh"

ALL=(auth portfolio market-data notifications analytics)
NEXANEST="$REPO_DIR/.venv/bin/nexanest"
PYTHON="$REPO_DIR/.venv/bin/python"

port_of() { "$PYTHON" -c "from nexanest.pipeline.settings import load_settings; print(load_settings().services.ports()['$1'])"; }
pidfile() { echo "$RUN_DIR/service-$1.pid"; }
logfile() { echo "$LOG_DIR/service-$1.log"; }
running() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }
# The service's /readyz answers 200 (its databases and Redis answer too).
ready() {
  "$PYTHON" - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

start_one() {
  local name=$1 port
  port=$(port_of "$name")
  if running "$name"; then log "$name already running on port $port"; return 0; fi
  if port_open "$port"; then die "port $port ($name) is taken by another process"; fi
  log "starting $name on 127.0.0.1:$port (log: $(logfile "$name"))"
  (cd "$REPO_DIR" && exec setsid "$NEXANEST" serve "$name" >>"$(logfile "$name")" 2>&1 </dev/null) &
  echo $! >"$(pidfile "$name")"
  local waited=0
  until ready "$port"; do
    if ! running "$name"; then
      tail -n 30 "$(logfile "$name")" >&2
      die "$name exited during start"
    fi
    if [ "$waited" -ge 60 ]; then
      tail -n 30 "$(logfile "$name")" >&2
      die "$name is not ready after 60 s (GET /readyz)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

stop_one() {
  local name=$1
  if ! running "$name"; then log "$name not running"; rm -f "$(pidfile "$name")"; return 0; fi
  log "stopping $name"
  kill -TERM "$(cat "$(pidfile "$name")")"
  local waited=0
  while running "$name" && [ "$waited" -lt 20 ]; do sleep 1; waited=$((waited + 1)); done
  if running "$name"; then kill -KILL "$(cat "$(pidfile "$name")")"; fi
  rm -f "$(pidfile "$name")"
}

status_one() {
  local name=$1 port
  port=$(port_of "$name")
  if running "$name" && ready "$port"; then
    printf '%-13s up     %-18s port %-5s\n' "$name" "" "$port"
  elif running "$name"; then
    printf '%-13s unready %-17s port %-5s\n' "$name" "" "$port"
    return 1
  else
    printf '%-13s down   %-18s port %-5s\n' "$name" "" "$port"
    return 1
  fi
}

[ -x "$NEXANEST" ] || die "$NEXANEST is missing: run 'make venv' first"
action=${1:-}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
ensure_dirs
status=0
case "$action" in
  start) for n in "${names[@]}"; do start_one "$n"; done ;;
  stop) for n in "${names[@]}"; do stop_one "$n"; done ;;
  status) for n in "${names[@]}"; do status_one "$n" || status=1; done ;;
  logs) for n in "${names[@]}"; do tail -n 50 "$(logfile "$n")"; done ;;
  *) echo "usage: $0 start|stop|status|logs [auth|portfolio|market-data|notifications|analytics ...]" >&2; exit 2 ;;
esac
exit "$status"
