#!/usr/bin/env bash
# The whole local stack on loopback, without Docker.
#   stack.sh install [SERVICE...]   install packages, build TimescaleDB, fetch Kafka jars
#   stack.sh up      [SERVICE...]   env + start (installs what is missing first)
#   stack.sh down    [SERVICE...]   stop
#   stack.sh status  [SERVICE...]   one line each; exit 1 if any is down
#   stack.sh logs    SERVICE [-f]
# SERVICE is postgres, timescaledb, redis, kafka, prometheus, timescaledb-community or
# kafka-cluster (the three-node SASL/SCRAM Kafka cluster: `make stack-up KAFKA_BROKERS=3`
# names it instead of kafka; status and down include it while a node of it runs).
# The default is the four the product runs on plus Prometheus and its exporters
# (prometheus.sh, 127.0.0.1:9090), which watch them. timescaledb-community (the
# community edition on 5434, built from source, for its tests: `make test`) is
# started only when named; `status`/`down` include it once it has a data directory.
SERVICE_NAME=stack
. "$(dirname "$0")/lib.sh"

ALL=(postgres timescaledb redis kafka prometheus)
OPTIONAL=(timescaledb-community)
# Included in status and down only while running: the fault tests start and stop it.
WHILE_RUNNING=(kafka-cluster)

services() { if [ $# -gt 0 ]; then printf '%s\n' "$@"; else printf '%s\n' "${ALL[@]}"; fi; }

# The default list plus the optional services that were started once (for status and down).
known_services() {
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; return; fi
  printf '%s\n' "${ALL[@]}"
  local svc
  for svc in "${OPTIONAL[@]}"; do
    if [ -d "$STATE_DIR/$svc" ]; then printf '%s\n' "$svc"; fi
  done
  for svc in "${WHILE_RUNNING[@]}"; do
    case "$("$LOCAL_DIR/$svc.sh" status 2>/dev/null)" in *" up "*) printf '%s\n' "$svc" ;; esac
  done
}

run_each() {
  local action=$1 svc rc=0
  shift
  for svc in $(services "$@"); do
    [ -x "$LOCAL_DIR/$svc.sh" ] || die "unknown service '$svc' (known: ${ALL[*]} ${OPTIONAL[*]} ${WHILE_RUNNING[*]})"
    "$LOCAL_DIR/$svc.sh" "$action" || rc=1
  done
  return $rc
}

case "${1:-}" in
  install) shift; ensure_dirs; run_each install "$@" ;;
  up)
    shift
    ensure_dirs
    "$LOCAL_DIR/env.sh"
    run_each install "$@"
    run_each start "$@"
    run_each status "$@"
    ;;
  down)
    shift
    # Reverse order: the broker and caches first, the databases last.
    mapfile -t list < <(known_services "$@")
    for ((i = ${#list[@]} - 1; i >= 0; i--)); do "$LOCAL_DIR/${list[i]}.sh" stop || true; done
    ;;
  status)
    shift
    mapfile -t list < <(known_services "$@")
    run_each status "${list[@]}"
    ;;
  logs) shift; svc=${1:?usage: stack.sh logs SERVICE [-f]}; shift; "$LOCAL_DIR/$svc.sh" logs "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
