#!/usr/bin/env bash
# The whole local stack on loopback, without Docker.
#   stack.sh install [SERVICE...]   install packages, build TimescaleDB, fetch Kafka jars
#   stack.sh up      [SERVICE...]   env + start (installs what is missing first)
#   stack.sh down    [SERVICE...]   stop
#   stack.sh status  [SERVICE...]   one line each; exit 1 if any is down
#   stack.sh logs    SERVICE [-f]
# SERVICE is postgres, timescaledb, redis or kafka (default: all four).
SERVICE_NAME=stack
. "$(dirname "$0")/lib.sh"

ALL=(postgres timescaledb redis kafka)

services() { if [ $# -gt 0 ]; then printf '%s\n' "$@"; else printf '%s\n' "${ALL[@]}"; fi; }

run_each() {
  local action=$1 svc rc=0
  shift
  for svc in $(services "$@"); do
    [ -x "$LOCAL_DIR/$svc.sh" ] || die "unknown service '$svc' (known: ${ALL[*]})"
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
    mapfile -t list < <(services "$@")
    for ((i = ${#list[@]} - 1; i >= 0; i--)); do "$LOCAL_DIR/${list[i]}.sh" stop || true; done
    ;;
  status) shift; run_each status "$@" ;;
  logs) shift; svc=${1:?usage: stack.sh logs SERVICE [-f]}; shift; "$LOCAL_DIR/$svc.sh" logs "$@" ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
