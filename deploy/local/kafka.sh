#!/usr/bin/env bash
# Local Apache Kafka: one KRaft node that is both broker and controller, on loopback.
# Its classpath is assembled from Maven Central by deploy/local/kafka/pom.xml (no tarball).
#
#   kafka.sh install                        jars into $CACHE_DIR/kafka-<version>/libs (once)
#   kafka.sh start | stop | status
#   kafka.sh logs [-f]                      broker log (kafka-server.log) and stdout (kafka.log)
#   kafka.sh topics-create NAME PARTITIONS [TopicCommand args...]   idempotent
#   kafka.sh run-class CLASS [ARGS...]      any class on the classpath, e.g.
#            run-class org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:9092 ...
#
# Sourced (kafka-cluster.sh does), it only defines its functions and defaults: the
# caller points KAFKA_STATE, the ports, the pid file and KAFKA_LOG_DIR at a node of its own.
#
# Environment: NEXANEST_KAFKA_HEAP (default "-Xms512m -Xmx1g"),
#              NEXANEST_KAFKA_TOOLS_HEAP (default "-Xmx512m", for run-class).
SERVICE_NAME=${SERVICE_NAME:-kafka}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_POM="$LOCAL_DIR/kafka/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n 1)
[ -n "$KAFKA_VERSION" ] || die "no <kafka.version> in $KAFKA_POM"

KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_STAMP="$KAFKA_HOME/.installed"
MAVEN_REPO="$CACHE_DIR/maven-repo"

KAFKA_STATE="$STATE_DIR/kafka"
KAFKA_DATA="$KAFKA_STATE/data"
KAFKA_CONFIG="$KAFKA_STATE/server.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_STATE/cluster.id"
KAFKA_PID_FILE="$RUN_DIR/kafka.pid"
KAFKA_VERSION_FILE="$RUN_DIR/kafka.version"
KAFKA_LOG_DIR="$LOG_DIR"
KAFKA_STDOUT="$KAFKA_LOG_DIR/kafka.log"
KAFKA_SERVER_LOG="$KAFKA_LOG_DIR/kafka-server.log"

KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"

KAFKA_HEAP=${NEXANEST_KAFKA_HEAP:--Xms512m -Xmx1g}
KAFKA_TOOLS_HEAP=${NEXANEST_KAFKA_TOOLS_HEAP:--Xmx512m}

# --------------------------------------------------------------------------- helpers

ensure_java() {
  command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [ "${major%%.*}" -ge 17 ] 2>/dev/null || die "Kafka $KAFKA_VERSION needs Java 17 or newer (found '${major:-none}')"
}

# pom hash: a changed pom (new Kafka or log4j version) means a fresh libs directory.
pom_hash() { sha256sum "$KAFKA_POM" | cut -d' ' -f1; }

installed() { [ -f "$KAFKA_STAMP" ] && [ "$(cat "$KAFKA_STAMP")" = "$(pom_hash)" ]; }

require_installed() {
  installed || die "Kafka $KAFKA_VERSION is not installed: run deploy/local/kafka.sh install"
}

# Short admin commands: client JVM tuned for start-up time, warnings only.
TOOL_JAVA=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$LOCAL_DIR/kafka/log4j2-tools.xml" -cp "$KAFKA_LIBS/*")
tool_java() { "${TOOL_JAVA[@]}" "$@"; }

# Pid of our broker, if it is running (checked against the command line, not just the pid).
running_pid() {
  local pid
  [ -f "$KAFKA_PID_FILE" ] || return 1
  pid=$(cat "$KAFKA_PID_FILE")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $KAFKA_CONFIG" || return 1
  printf '%s' "$pid"
}

port_owner() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1
}

write_config() {
  mkdir -p "$KAFKA_STATE" "$KAFKA_DATA"
  cat >"$KAFKA_CONFIG" <<EOF
# Written by deploy/local/kafka.sh on every start; edit the script, not this file.
# Single KRaft node: broker and controller in one process, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT

log.dirs=$KAFKA_DATA
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true

# Internal topics on a single node.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Retention: 3 days or 2 GiB per partition, whichever comes first; topics may override.
log.retention.hours=72
log.retention.bytes=2147483648
log.segment.bytes=268435456
log.retention.check.interval.ms=300000

# Two cores: keep the thread pools small.
num.network.threads=3
num.io.threads=4
num.recovery.threads.per.data.dir=2
background.threads=4
EOF
}

# Format the data directory once (a standalone dynamic quorum of this one controller).
format_storage() {
  if [ -f "$KAFKA_DATA/meta.properties" ]; then return 0; fi
  local cluster_id
  if [ -s "$KAFKA_CLUSTER_ID_FILE" ]; then
    cluster_id=$(cat "$KAFKA_CLUSTER_ID_FILE")
  else
    cluster_id=$(tool_java kafka.tools.StorageTool random-uuid | tail -n 1)
    [ -n "$cluster_id" ] || die "could not generate a cluster id"
    printf '%s\n' "$cluster_id" >"$KAFKA_CLUSTER_ID_FILE"
  fi
  log "formatting $KAFKA_DATA (cluster id $cluster_id)"
  tool_java kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KAFKA_CONFIG" >/dev/null \
    || die "kafka-storage format failed"
}

# --------------------------------------------------------------------------- commands

cmd_install() {
  ensure_dirs
  if installed; then
    log "Kafka $KAFKA_VERSION already installed in $KAFKA_HOME"
    return 0
  fi
  ensure_java
  command -v mvn >/dev/null 2>&1 || apt_install maven
  log "assembling Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS" "$MAVEN_REPO"
  if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" -Dmaven.repo.local="$MAVEN_REPO" \
    dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime \
    >"$KAFKA_HOME/install.log" 2>&1; then
    tail -n 30 "$KAFKA_HOME/install.log" >&2
    die "mvn dependency:copy-dependencies failed (see $KAFKA_HOME/install.log)"
  fi
  [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
  pom_hash >"$KAFKA_STAMP"
  log "installed $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$KAFKA_LIBS" | cut -f1))"
}

cmd_start() {
  ensure_dirs
  local pid
  if pid=$(running_pid); then
    log "already running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  installed || cmd_install
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$port"; then
      die "port $port is taken by another process $(port_owner "$port") (not our Kafka); stop it first"
    fi
  done
  ensure_java
  write_config
  format_storage
  launch_broker
  wait_broker
}

# Start the JVM of the node the KAFKA_* variables describe, in the background; its pid
# goes to $KAFKA_PID_FILE. Configured and formatted already.
launch_broker() {
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT)"
  mkdir -p "$KAFKA_LOG_DIR"
  {
    echo
    echo "==== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting Kafka $KAFKA_VERSION ===="
  } >>"$KAFKA_STDOUT"
  # setsid: its own session, so it outlives the shell (and its process group) that started it.
  # shellcheck disable=SC2086  # the heap options are meant to split
  setsid nohup java $KAFKA_HEAP \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "-Xlog:gc*:file=$KAFKA_LOG_DIR/kafka-gc.log:time,tags:filecount=5,filesize=10M" \
    -Dkafka.logs.dir="$KAFKA_LOG_DIR" -Dlog4j2.configurationFile="$LOCAL_DIR/kafka/log4j2.xml" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONFIG" \
    >>"$KAFKA_STDOUT" 2>&1 </dev/null &
  echo "$!" >"$KAFKA_PID_FILE"
  echo "$KAFKA_VERSION" >"$KAFKA_VERSION_FILE"
  KAFKA_STARTED_AT=$SECONDS
}

# Wait until the launched node listens on $KAFKA_PORT and answers a metadata request.
wait_broker() {
  local pid waited=0 tries=0
  pid=$(cat "$KAFKA_PID_FILE")
  until port_open "$KAFKA_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$KAFKA_PID_FILE"
      tail -n 30 "$KAFKA_STDOUT" >&2
      die "Kafka exited during start-up (see $KAFKA_STDOUT and $KAFKA_SERVER_LOG)"
    fi
    [ "$waited" -ge 90 ] && die "Kafka did not open port $KAFKA_PORT within 90s (see $KAFKA_SERVER_LOG)"
    sleep 1
    waited=$((waited + 1))
  done
  # KAFKA_CLIENT_CONFIG: a client properties file (kafka-cluster.sh: its admin's SASL login).
  until timeout 30 "${TOOL_JAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    ${KAFKA_CLIENT_CONFIG:+--command-config "$KAFKA_CLIENT_CONFIG"} --list >/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -ge 5 ] && die "Kafka listens on $KAFKA_PORT but does not answer (see $KAFKA_SERVER_LOG)"
    sleep 2
  done
  log "up (pid $pid) after $((SECONDS - ${KAFKA_STARTED_AT:-$SECONDS}))s"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    log "not running"
    rm -f "$KAFKA_PID_FILE"
    return 0
  fi
  log "stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  await_exit 30 Kafka "$pid"
  rm -f "$KAFKA_PID_FILE" "$KAFKA_VERSION_FILE"
  log "stopped"
}

cmd_status() {
  local version
  if running_pid >/dev/null && port_open "$KAFKA_PORT"; then
    version=$(cat "$KAFKA_VERSION_FILE" 2>/dev/null || echo "$KAFKA_VERSION")
    printf '%-12s up     version %-10s port %-5s\n' kafka "$version" "$KAFKA_PORT"
  else
    printf '%-12s down   %-18s port %-5s\n' kafka "" "$KAFKA_PORT"
    return 1
  fi
}

cmd_logs() {
  local files=()
  [ -f "$KAFKA_STDOUT" ] && files+=("$KAFKA_STDOUT")
  [ -f "$KAFKA_SERVER_LOG" ] && files+=("$KAFKA_SERVER_LOG")
  [ ${#files[@]} -gt 0 ] || die "no logs yet in $LOG_DIR"
  if [ "${1:-}" = "-f" ]; then
    exec tail -n 50 -F "${files[@]}"
  fi
  tail -n 50 "${files[@]}"
}

cmd_topics_create() {
  [ $# -ge 2 ] || die "usage: kafka.sh topics-create NAME PARTITIONS [TopicCommand args...]"
  local name=$1 partitions=$2
  shift 2
  require_installed
  running_pid >/dev/null || die "not running: run deploy/local/kafka.sh start"
  tool_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --create --if-not-exists --topic "$name" --partitions "$partitions" --replication-factor 1 "$@" >/dev/null
  log "topic $name ready ($partitions partitions)"
}

cmd_run_class() {
  [ $# -ge 1 ] || die "usage: kafka.sh run-class CLASS [ARGS...]"
  require_installed
  # shellcheck disable=SC2086
  exec java $KAFKA_TOOLS_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOCAL_DIR/kafka/log4j2-tools.xml" -cp "$KAFKA_LIBS/*" "$@"
}

# Sourced: functions only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  topics-create) shift; cmd_topics_create "$@" ;;
  run-class) shift; cmd_run_class "$@" ;;
  *)
    echo "usage: $0 install|start|stop|restart|status|logs [-f]|topics-create NAME PARTITIONS|run-class CLASS [ARGS...]" >&2
    exit 2
    ;;
esac
