#!/usr/bin/env bash
# Prometheus and its exporters for the local stack, from Debian's packages, on loopback only.
#
#   prometheus.sh install        apt packages prometheus, prometheus-alertmanager, prometheus-postgres-exporter,
#                                prometheus-redis-exporter (Debian's own services are kept from starting: see below)
#   prometheus.sh start          generate the configs, start whatever is not running, reload what is
#   prometheus.sh stop
#   prometheus.sh status         one line per process; exits non-zero when one is down
#   prometheus.sh targets        every scrape target with its health (from Prometheus' API)
#   prometheus.sh config         print the Prometheus configuration that start writes
#   prometheus.sh alertmanager-config [URL]
#                                print Alertmanager's configuration, its receivers posting to URL
#                                (default: NEXANEST_ALERTING__WEBHOOK_URL; none: no receiver posts)
#   prometheus.sh logs [NAME] [-f]   NAME: prometheus (default), alertmanager, postgres-exporter,
#                                timescaledb-exporter, community-exporter, redis-exporter
#
# What runs (as the `prometheus` user when started as root):
#
#   process               listens on        watches
#   prometheus            127.0.0.1:9090    everything below; config in $STATE_DIR/prometheus/
#   alertmanager          127.0.0.1:9095    receives Prometheus' alerts; config in $STATE_DIR/alertmanager/
#                                           (not its usual 9093: the stack's Kafka controller listens there)
#   postgres-exporter     127.0.0.1:9187    PostgreSQL 127.0.0.1:5432
#   timescaledb-exporter  127.0.0.1:9188    TimescaleDB 127.0.0.1:5433
#   community-exporter    127.0.0.1:9189    TimescaleDB community edition 127.0.0.1:5434, only once
#                                           that cluster exists (make community-up; job timescaledb-community)
#   redis-exporter        127.0.0.1:9121    Redis 127.0.0.1:6379
#
# Scrape targets: Prometheus itself, Alertmanager (job alertmanager), the exporters
# (job postgres with a `cluster` label, job redis, job timescaledb-community), and
# the project's own processes, which announce themselves: each process that serves
# metrics writes a file_sd file while it runs (pipeline/targets.py) into
# NEXANEST_METRICS__TARGETS_DIR, which env.sh sets to $STATE_DIR/prometheus/targets:
#   targets/<component>-<port>.json           job nexanest, label `component`: consumer,
#                                             producer, run, quotes (nexanest consume, ...)
#   targets/services/<service>-<port>.json    job services, label `component`: auth,
#                                             portfolio, market-data, notifications, analytics
# A process removes its file when it exits cleanly (SIGTERM and Ctrl-C included), so
# Prometheus lists exactly what runs: after `make stack-up` alone, no target is down.
# One killed with SIGKILL leaves its file, and its target shows down (the consumer-down
# alert) until the process runs again on that port or the file is deleted. Drop more
# *.json files there to add targets by hand; Prometheus picks them up within 30 s.
# `prometheus.sh config` prints the configuration (without starting anything).
#
# The alert rules are deploy/prometheus/rules/*.yml, copied next to the config
# at every start and checked with promtool before Prometheus (re)loads them.
#
# Alerts go to Alertmanager on 9095 (and to any other Alertmanager announced by a
# file in $STATE_DIR/prometheus/alertmanagers/*.json, file_sd format). Its route
# tree (alertmanager_config below, checked with amtool): grouped by alertname and
# job; critical alerts to receiver `critical` (first notice after 10 s, repeated
# hourly), warnings to `warning` (30 s, every 12 h); a critical alert inhibits a
# warning of the same alertname and job. Every receiver posts Alertmanager's
# webhook JSON to NEXANEST_ALERTING__WEBHOOK_URL (environment or .env): the hook
# for the notifications service. Unset, the receivers post nowhere and alerts are
# only listed (amtool alert query --alertmanager.url http://127.0.0.1:9095).
#
# The exporters log in as nexanest_monitor, a login role with pg_monitor and
# nothing else (postgres.sh and timescaledb.sh create it; password
# NEXANEST_MONITOR_PASSWORD in .env). Credentials reach them in a mode-600 file
# (PostgreSQL: DATA_SOURCE_PASS_FILE) or their environment (Redis:
# REDIS_PASSWORD), never on a command line.
SERVICE_NAME=prometheus
. "$(dirname "$0")/lib.sh"

PROM_PORT=9090
ALERTMANAGER_PORT=9095
PG_EXPORTER_PORT=9187
TS_EXPORTER_PORT=9188
COMMUNITY_EXPORTER_PORT=9189
COMMUNITY_PORT=5434
REDIS_EXPORTER_PORT=9121
PACKAGES=(prometheus prometheus-alertmanager prometheus-postgres-exporter prometheus-redis-exporter)
UNITS=(prometheus.service prometheus-alertmanager.service prometheus-postgres-exporter.service
  prometheus-redis-exporter.service)

PROM_DIR="$STATE_DIR/prometheus"
CONFIG="$PROM_DIR/prometheus.yml"
AM_DIR="$STATE_DIR/alertmanager"
AM_CONFIG="$AM_DIR/alertmanager.yml"
# The community cluster (timescaledb-community.sh) exists once it has a data directory.
community_exists() { [ -f "$STATE_DIR/timescaledb-community/PG_VERSION" ]; }

# The processes this script runs: the community exporter only beside that cluster.
processes() {
  printf '%s\n' prometheus alertmanager postgres-exporter timescaledb-exporter
  if community_exists; then echo community-exporter; fi
  echo redis-exporter
}
if is_root; then RUN_AS=prometheus; else RUN_AS=$(id -un); fi

usage() { # the comment block at the top of this file
  sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- install ------------------------------------------------------------------

# Debian's packages enable and start their own prometheus and exporters (port 9090
# on every interface, exporters without credentials). The stack runs its own
# copies, so: no start during the install (a policy-rc.d that refuses, unless the
# machine already has one), then the units are masked so neither boot nor a
# package upgrade starts them.
cmd_install() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    is_root || die "missing Debian packages (${missing[*]}); run as root or install them"
    local policy=/usr/sbin/policy-rc.d ours=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\n# nexanest deploy/local/prometheus.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      ours=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_install "${PACKAGES[@]}"
    if [ "$ours" -eq 1 ]; then rm -f "$policy"; trap - EXIT; fi
  fi
  if is_root; then mask_debian_units; fi
  local tool
  for tool in prometheus promtool prometheus-alertmanager amtool prometheus-postgres-exporter prometheus-redis-exporter; do
    command -v "$tool" >/dev/null || die "$tool is missing after the install"
  done
}

mask_debian_units() {
  local unit
  for unit in "${UNITS[@]}"; do
    [ -L "/etc/systemd/system/$unit" ] && [ "$(readlink "/etc/systemd/system/$unit")" = /dev/null ] && continue
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
      systemctl mask "$unit" >/dev/null
    else # no systemd running (a container): the same links, made offline
      systemctl --root=/ disable "$unit" >/dev/null 2>&1 || true
      systemctl --root=/ mask "$unit" >/dev/null 2>&1 || ln -sf /dev/null "/etc/systemd/system/$unit"
    fi
    log "masked Debian's $unit (the stack runs its own on loopback)"
  done
}

# --- configuration ------------------------------------------------------------

# alertmanager_config [URL]: Alertmanager's configuration (see the top of this file).
# Each receiver posts to URL when one is given; the webhook JSON carries the
# receiver's name, so the notifications service can tell critical from warning.
alertmanager_config() {
  local url=${1:-} receiver
  cat <<YAML
# Generated by deploy/local/prometheus.sh (alertmanager_config): edit the script, not this file.
route:
  receiver: warning
  group_by: [alertname, job]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 12h
  routes:
    - matchers: ['severity="critical"']
      receiver: critical
      group_wait: 10s
      group_interval: 1m
      repeat_interval: 1h
    - matchers: ['severity="warning"']
      receiver: warning

# A critical alert silences a warning about the same thing (same alertname and job).
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [alertname, job]

receivers:
YAML
  for receiver in critical warning; do
    printf '  - name: %s\n' "$receiver"
    [ -n "$url" ] && printf '    webhook_configs:\n      - url: "%s"\n        send_resolved: true\n' "$url"
  done
  return 0
}

write_alertmanager_config() {
  mkdir -p "$AM_DIR/data"
  alertmanager_config "$(env_setting NEXANEST_ALERTING__WEBHOOK_URL "")" >"$AM_CONFIG.tmp"
  chmod 600 "$AM_CONFIG.tmp" # the URL may carry a token
  local checked
  checked=$(amtool check-config "$AM_CONFIG.tmp" 2>&1) || { printf '%s\n' "$checked" >&2; die "amtool rejects $AM_CONFIG"; }
  mv "$AM_CONFIG.tmp" "$AM_CONFIG"
  if is_root; then chown -R "$RUN_AS" "$AM_DIR"; fi
}

write_config() {
  mkdir -p "$PROM_DIR/data" "$PROM_DIR/rules" "$PROM_DIR/targets/services" "$PROM_DIR/alertmanagers"
  rm -f "$PROM_DIR/rules/"*.yml
  cp "$REPO_DIR"/deploy/prometheus/rules/*.yml "$PROM_DIR/rules/"
  # The static port map an older version of this script wrote: every process down
  # until started. The processes announce themselves now.
  rm -f "$PROM_DIR/targets/pipeline.json"
  # One target group without targets in each directory: Prometheus 2.42 keeps a
  # job's old targets over a reload when its discovery yields no group at all
  # (prometheus/prometheus#12858, fixed in 2.49), which would leave the static
  # targets of an older configuration, down, for as long as no process announces.
  local dir
  for dir in "$PROM_DIR/targets" "$PROM_DIR/targets/services"; do
    printf '[{"targets": [], "labels": {}}]\n' >"$dir/_none.json.tmp"
    mv "$dir/_none.json.tmp" "$dir/_none.json"
  done
  prometheus_config >"$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
  local checked
  checked=$(promtool check config "$CONFIG" 2>&1) || { printf '%s\n' "$checked" >&2; die "promtool rejects $CONFIG"; }
  if is_root; then chown -R "$RUN_AS" "$PROM_DIR"; fi
}

# prometheus_config: prometheus.yml (see the top of this file).
prometheus_config() {
  cat <<YAML
# Generated by deploy/local/prometheus.sh at every start: edit the script, not this file.
global:
  scrape_interval: 10s
  scrape_timeout: 5s
  evaluation_interval: 10s

rule_files:
  - $PROM_DIR/rules/*.yml

# Alertmanager on $ALERTMANAGER_PORT, plus any announced by a file in alertmanagers/ (file_sd).
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$ALERTMANAGER_PORT"]
    - file_sd_configs:
        - files: ["$PROM_DIR/alertmanagers/*.json"]
          refresh_interval: 5s

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]

  # The pipeline's processes, each announced by its own file while it runs
  # (pipeline/targets.py, label component); add files to add targets.
  - job_name: nexanest
    file_sd_configs:
      - files: ["$PROM_DIR/targets/*.json"]
        refresh_interval: 30s

  # The HTTP services (make services-up), announced the same way in targets/services/;
  # each serves /metrics on its own HTTP port (services/app.py).
  - job_name: services
    file_sd_configs:
      - files: ["$PROM_DIR/targets/services/*.json"]
        refresh_interval: 30s

  - job_name: postgres
    static_configs:
      - targets: ["127.0.0.1:$PG_EXPORTER_PORT"]
        labels: {cluster: postgres}
      - targets: ["127.0.0.1:$TS_EXPORTER_PORT"]
        labels: {cluster: timescaledb}

  - job_name: redis
    static_configs:
      - targets: ["127.0.0.1:$REDIS_EXPORTER_PORT"]

  - job_name: alertmanager
    static_configs:
      - targets: ["127.0.0.1:$ALERTMANAGER_PORT"]
YAML
  if community_exists; then
    cat <<YAML

  # The community-edition cluster (make community-up), a job of its own: the
  # database-down alerts watch the product's clusters, not this one.
  - job_name: timescaledb-community
    static_configs:
      - targets: ["127.0.0.1:$COMMUNITY_EXPORTER_PORT"]
        labels: {cluster: timescaledb-community}
YAML
  fi
}

# --- processes ------------------------------------------------------------------

pidfile() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
logfile() { printf '%s/%s.log' "$LOG_DIR" "$1"; }
port_of() {
  case $1 in
    prometheus) echo "$PROM_PORT" ;;
    alertmanager) echo "$ALERTMANAGER_PORT" ;;
    postgres-exporter) echo "$PG_EXPORTER_PORT" ;;
    timescaledb-exporter) echo "$TS_EXPORTER_PORT" ;;
    community-exporter) echo "$COMMUNITY_EXPORTER_PORT" ;;
    redis-exporter) echo "$REDIS_EXPORTER_PORT" ;;
    *) die "unknown process '$1' (known: $(processes | xargs))" ;;
  esac
}

running() { start-stop-daemon --status --pidfile "$(pidfile "$1")" 2>/dev/null; }

# launch NAME BINARY ARGS...: start BINARY in the background as $RUN_AS, its pid in
# $RUN_DIR and its output in $LOG_DIR. The caller's environment is passed on.
launch() {
  local name=$1
  shift
  local chuid=()
  if is_root; then chuid=(--chuid "$RUN_AS"); fi
  start-stop-daemon --start --quiet --background --make-pidfile --pidfile "$(pidfile "$name")" \
    --output "$(logfile "$name")" "${chuid[@]}" --exec "$@"
}

start_process() {
  local name=$1 port
  port=$(port_of "$name")
  if running "$name"; then return 0; fi
  if port_open "$port"; then die "port $port is taken by another process (not our $name)"; fi
  log "starting $name on 127.0.0.1:$port"
  : >>"$(logfile "$name")"
  if is_root; then chown "$RUN_AS" "$(logfile "$name")"; fi
  case $name in
    prometheus)
      launch prometheus "$(command -v prometheus)" -- \
        --config.file="$CONFIG" \
        --storage.tsdb.path="$PROM_DIR/data" \
        --storage.tsdb.retention.time=15d \
        --web.listen-address="127.0.0.1:$PROM_PORT" \
        --web.console.templates=/usr/share/prometheus/consoles \
        --web.console.libraries=/usr/share/prometheus/console_libraries
      ;;
    alertmanager)
      # No cluster (its gossip port would listen on every interface).
      launch alertmanager "$(command -v prometheus-alertmanager)" -- \
        --config.file="$AM_CONFIG" \
        --storage.path="$AM_DIR/data" \
        --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
        --cluster.listen-address=
      ;;
    postgres-exporter | timescaledb-exporter | community-exporter)
      local db_port=5432
      [ "$name" = timescaledb-exporter ] && db_port=5433
      [ "$name" = community-exporter ] && db_port=$COMMUNITY_PORT
      DATA_SOURCE_URI="127.0.0.1:$db_port/postgres?sslmode=disable" DATA_SOURCE_USER=nexanest_monitor \
        DATA_SOURCE_PASS_FILE="$PROM_DIR/monitor.pass" \
        launch "$name" "$(command -v prometheus-postgres-exporter)" -- \
        --web.listen-address="127.0.0.1:$port" --disable-settings-metrics
      ;;
    redis-exporter)
      REDIS_PASSWORD=$(env_value NEXANEST_REDIS_PASSWORD) REDIS_ADDR=redis://127.0.0.1:6379 \
        launch redis-exporter "$(command -v prometheus-redis-exporter)" -- \
        -web.listen-address="127.0.0.1:$port"
      ;;
  esac
  if ! wait_for_port "$port" 30; then
    tail -n 20 "$(logfile "$name")" >&2
    die "$name did not listen on 127.0.0.1:$port within 30 s"
  fi
}

stop_process() {
  local name=$1
  if running "$name"; then
    log "stopping $name"
    start-stop-daemon --stop --quiet --pidfile "$(pidfile "$name")" --retry TERM/20/KILL/5 --remove-pidfile \
      || die "$name did not stop"
  fi
  rm -f "$(pidfile "$name")"
}

# http_get PORT PATH: the response body (HTTP/1.0 over bash's /dev/tcp: no curl needed).
http_get() {
  local port=$1 path=$2 response
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
  response=$(cat <&3)
  exec 3<&-
  [[ ${response%%$'\r'*} == *" 200 "* ]] || return 1
  printf '%s' "${response#*$'\r\n\r\n'}"
}

wait_ready() {
  local waited=0
  until http_get "$PROM_PORT" /-/ready >/dev/null 2>&1; do
    [ "$waited" -ge 60 ] && { tail -n 20 "$(logfile prometheus)" >&2; die "Prometheus not ready within 60 s"; }
    sleep 1
    waited=$((waited + 1))
  done
}

cmd_start() {
  command -v prometheus >/dev/null || die "Prometheus is not installed: run '$0 install'"
  ensure_dirs
  mkdir -p "$PROM_DIR"
  grep -qE '^NEXANEST_MONITOR_PASSWORD=' "$ENV_FILE" 2>/dev/null ||
    die "NEXANEST_MONITOR_PASSWORD is not in $ENV_FILE: run deploy/local/env.sh, then postgres.sh and timescaledb.sh start (they create the role)"
  (
    umask 077
    env_value NEXANEST_MONITOR_PASSWORD >"$PROM_DIR/monitor.pass"
  )
  write_config
  write_alertmanager_config
  chmod 600 "$PROM_DIR/monitor.pass"
  local name
  for name in $(processes); do
    case $name in
      prometheus) ;;
      alertmanager)
        if running alertmanager; then kill -HUP "$(cat "$(pidfile alertmanager)")"; else start_process alertmanager; fi
        ;;
      *) start_process "$name" ;;
    esac
  done
  if running prometheus; then
    log "reloading the configuration and rules"
    kill -HUP "$(cat "$(pidfile prometheus)")"
  else
    start_process prometheus
  fi
  wait_ready
  log "ready on http://127.0.0.1:$PROM_PORT ($(ls "$PROM_DIR/rules" | wc -l) rule files)"
}

cmd_stop() {
  local name any=0
  # community-exporter even when its cluster is gone
  for name in prometheus alertmanager postgres-exporter timescaledb-exporter community-exporter redis-exporter; do
    if running "$name"; then any=1; fi
    stop_process "$name"
  done
  [ "$any" -eq 1 ] || log "not running"
}

version_of() {
  case $1 in
    prometheus) prometheus --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/\1/p' ;;
    alertmanager) prometheus-alertmanager --version 2>&1 | sed -n 's/^alertmanager, version \([^ ]*\).*/\1/p' ;;
    redis-exporter) prometheus-redis-exporter -version 2>&1 | grep -oE 'v?[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 ;;
    *) prometheus-postgres-exporter --version 2>&1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 ;;
  esac
}

# The name in status lines (the stack's first column is 12 characters wide).
short_name() {
  case $1 in
    postgres-exporter) echo pg-exporter ;;
    timescaledb-exporter) echo ts-exporter ;;
    community-exporter) echo tsc-exporter ;;
    redis-exporter) echo redis-export ;;
    *) echo "$1" ;;
  esac
}

cmd_status() {
  local name rc=0 extra
  for name in $(processes); do
    case $name in
      prometheus) extra="" ;;
      alertmanager) extra="webhook $([ -n "$(env_setting NEXANEST_ALERTING__WEBHOOK_URL "")" ] && echo set || echo unset)" ;;
      community-exporter) extra="watches TimescaleDB community $COMMUNITY_PORT" ;;
      postgres-exporter) extra="watches PostgreSQL 5432" ;;
      timescaledb-exporter) extra="watches TimescaleDB 5433" ;;
      redis-exporter) extra="watches Redis 6379" ;;
    esac
    if running "$name" && port_open "$(port_of "$name")"; then
      if [ "$name" = prometheus ]; then extra=$(target_summary); fi
      printf '%-12s up     version %-10s port %-5s %s\n' "$(short_name "$name")" "$(version_of "$name")" \
        "$(port_of "$name")" "$extra"
    else
      printf '%-12s down   %-18s port %-5s %s\n' "$(short_name "$name")" "" "$(port_of "$name")" "$extra"
      rc=1
    fi
  done
  return $rc
}

# Read Prometheus' /api/v1/targets (JSON in $TARGETS_JSON) with python3: `summary`
# prints "targets 5/7 up (not up: nexanest/producer, ...)", `table` one line per target.
targets_report() {
  TARGETS_JSON=$(http_get "$PROM_PORT" /api/v1/targets) || return 1
  TARGETS_JSON=$TARGETS_JSON python3 - "$1" <<'PY'
import json, os, sys

active = json.loads(os.environ["TARGETS_JSON"])["data"]["activeTargets"]
def name(t):
    labels = t["labels"]
    return labels["job"] + "/" + labels.get("component", labels.get("cluster", labels["instance"]))
if sys.argv[1] == "summary":
    down = [name(t) for t in active if t["health"] != "up"]
    print(f"targets {len(active) - len(down)}/{len(active)} up" + (f" (not up: {', '.join(down)})" if down else ""))
else:
    for t in sorted(active, key=name):
        print(f"{name(t):<32} {t['health']:<8} {t['scrapeUrl']:<36} {t['lastError']}")
PY
}

target_summary() {
  command -v python3 >/dev/null || return 0
  targets_report summary 2>/dev/null || true
}

cmd_targets() {
  running prometheus || die "not running: $0 start"
  command -v python3 >/dev/null || die "python3 is needed to read the API's JSON"
  targets_report table
}

cmd_logs() {
  local name=prometheus follow=""
  for arg in "$@"; do
    case $arg in
      -f) follow=1 ;;
      *) port_of "$arg" >/dev/null && name=$arg ;;
    esac
  done
  local file
  file=$(logfile "$name")
  [ -f "$file" ] || die "no log yet ($file)"
  if [ -n "$follow" ]; then exec tail -n 50 -F "$file"; else tail -n 100 "$file"; fi
}

case "${1:-}" in
  install | start | stop | status | targets) cmd="cmd_$1"; shift; "$cmd" "$@" ;;
  alertmanager-config) alertmanager_config "${2-$(env_setting NEXANEST_ALERTING__WEBHOOK_URL "")}" ;;
  config) prometheus_config ;;
  logs) shift; cmd_logs "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
