#!/usr/bin/env bash
# A local three-node Apache Kafka cluster beside the single broker of kafka.sh.
# Three combined KRaft nodes (broker + controller each, a static controller quorum
# of three) on loopback, from the same Maven jars, with kafka.sh's install, launch
# and wait functions (this script sources it and points them at one node at a time).
#
#   kafka-cluster.sh start | stop | status     all three nodes (start is idempotent)
#   kafka-cluster.sh kill-node N               SIGKILL node N (1-3): a crash, no clean shutdown
#   kafka-cluster.sh start-node N | stop-node N
#   kafka-cluster.sh pid N                     node N's pid (exit 1 when it is not running)
#   kafka-cluster.sh bootstrap                 the bootstrap servers, comma-separated
#   kafka-cluster.sh logs N [-f]
#
# Node N: broker 127.0.0.1:1909(N+1), controller 127.0.0.1:1919(N+1), state, pid and
# logs in $STATE_DIR/kafka-cluster/node-N. Replication factor 3, min.insync.replicas=2,
# unclean leader election off, internal topics at replication 3: with acks=all a write
# is on two nodes before it is acknowledged, and one node may die without data loss
# or a stop of writes.
#
# Environment: NEXANEST_KAFKA_CLUSTER_HEAP (default "-Xms256m -Xmx384m", per node).
SERVICE_NAME=kafka-cluster
. "$(dirname "$0")/kafka.sh"

CLUSTER_STATE="$STATE_DIR/kafka-cluster"
CLUSTER_ID_FILE="$CLUSTER_STATE/cluster.id"
CLUSTER_NODES=(1 2 3)
CLUSTER_BROKER_BASE=19091     # node N listens on 19091 + N
CLUSTER_CONTROLLER_BASE=19191 # its controller on 19191 + N
KAFKA_HEAP=${NEXANEST_KAFKA_CLUSTER_HEAP:--Xms256m -Xmx384m}

cluster_bootstrap() {
  local n out=()
  for n in "${CLUSTER_NODES[@]}"; do out+=("$KAFKA_HOST:$((CLUSTER_BROKER_BASE + n))"); done
  (IFS=,; printf '%s' "${out[*]}")
}

quorum_voters() {
  local n out=()
  for n in "${CLUSTER_NODES[@]}"; do out+=("$n@$KAFKA_HOST:$((CLUSTER_CONTROLLER_BASE + n))"); done
  (IFS=,; printf '%s' "${out[*]}")
}

# Point kafka.sh's variables at node N.
select_node() {
  local n=$1
  case "$n" in 1 | 2 | 3) ;; *) die "no node '$n' (nodes: ${CLUSTER_NODES[*]})" ;; esac
  NODE_ID=$n
  KAFKA_STATE="$CLUSTER_STATE/node-$n"
  KAFKA_DATA="$KAFKA_STATE/data"
  KAFKA_CONFIG="$KAFKA_STATE/server.properties"
  KAFKA_CLUSTER_ID_FILE="$CLUSTER_ID_FILE"
  KAFKA_PID_FILE="$KAFKA_STATE/kafka.pid"
  KAFKA_VERSION_FILE="$KAFKA_STATE/kafka.version"
  KAFKA_LOG_DIR="$KAFKA_STATE/log"
  KAFKA_STDOUT="$KAFKA_LOG_DIR/kafka.log"
  KAFKA_SERVER_LOG="$KAFKA_LOG_DIR/kafka-server.log"
  KAFKA_PORT=$((CLUSTER_BROKER_BASE + n))
  KAFKA_CONTROLLER_PORT=$((CLUSTER_CONTROLLER_BASE + n))
  BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
}

# kafka.sh's write_config, for a node of the cluster.
write_config() {
  mkdir -p "$KAFKA_STATE" "$KAFKA_DATA" "$KAFKA_LOG_DIR"
  cat >"$KAFKA_CONFIG" <<EOF
# Written by deploy/local/kafka-cluster.sh on every start; edit the script, not this file.
# Node $NODE_ID of a three-node KRaft cluster: broker and controller in one process, loopback only.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$(quorum_voters)
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT

log.dirs=$KAFKA_DATA
num.partitions=6
auto.create.topics.enable=false
delete.topic.enable=true

# Durability: three copies, an acks=all write is on two before it is acknowledged,
# and a replica that fell behind never becomes leader (it would lose acknowledged writes).
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false

# Internal topics at replication 3 as well.
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0

# A dead node is fenced (its partitions get new leaders) when its heartbeats stop
# for broker.session.timeout.ms: 6 s instead of 9 s, heartbeats every second.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000

# A local cluster: a day or 1 GiB per partition.
log.retention.hours=24
log.retention.bytes=1073741824
log.segment.bytes=134217728
log.retention.check.interval.ms=300000

# Three JVMs on two cores: the smallest thread pools.
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
background.threads=2
EOF
}

# kafka.sh's format_storage, for a static quorum: no --standalone, one cluster id for all nodes.
format_storage() {
  if [ -f "$KAFKA_DATA/meta.properties" ]; then return 0; fi
  local cluster_id
  mkdir -p "$CLUSTER_STATE"
  if [ ! -s "$CLUSTER_ID_FILE" ]; then
    cluster_id=$(tool_java kafka.tools.StorageTool random-uuid | tail -n 1)
    [ -n "$cluster_id" ] || die "could not generate a cluster id"
    printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
  fi
  cluster_id=$(cat "$CLUSTER_ID_FILE")
  log "formatting $KAFKA_DATA (node $NODE_ID, cluster id $cluster_id)"
  tool_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONFIG" >/dev/null \
    || die "kafka-storage format failed for node $NODE_ID"
}

# Configure, format and launch node N unless it runs; 0 when it was launched now.
launch_node() {
  select_node "$1"
  local pid port
  if pid=$(running_pid); then
    log "node $1 already running (pid $pid) on $BOOTSTRAP"
    return 1
  fi
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$port"; then
      die "port $port is taken by another process $(port_owner "$port") (not node $1); stop it first"
    fi
  done
  write_config
  format_storage
  launch_broker
}

cmd_cluster_start() {
  ensure_dirs
  installed || cmd_install
  ensure_java
  local n launched=()
  # All three first: a node answers only once a majority of the controllers is up.
  for n in "${CLUSTER_NODES[@]}"; do
    if launch_node "$n"; then launched+=("$n"); fi
  done
  for n in "${launched[@]}"; do
    select_node "$n"
    wait_broker
  done
  log "cluster up on $(cluster_bootstrap)"
}

cmd_start_node() {
  ensure_dirs
  require_installed
  ensure_java
  if launch_node "$1"; then wait_broker; fi
}

cmd_stop_node() { select_node "$1"; cmd_stop; }

cmd_kill_node() {
  select_node "$1"
  local pid
  pid=$(running_pid) || die "node $1 is not running"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$KAFKA_PID_FILE"
  log "node $1 killed (pid $pid, SIGKILL)"
}

# All nodes at once: stopped one after another, the last ones would wait for a
# controller quorum that is already gone before they shut down.
cmd_cluster_stop() {
  local n pid pids=() waited=0
  for n in "${CLUSTER_NODES[@]}"; do
    select_node "$n"
    if pid=$(running_pid); then
      log "stopping node $n (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$waited" -ge 30 ]; then
        log "pid $pid still running after 30s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 1
      waited=$((waited + 1))
    done
  done
  for n in "${CLUSTER_NODES[@]}"; do
    select_node "$n"
    rm -f "$KAFKA_PID_FILE" "$KAFKA_VERSION_FILE"
  done
  log "stopped"
}

cmd_cluster_status() {
  local n pid rc=0
  for n in "${CLUSTER_NODES[@]}"; do
    select_node "$n"
    if pid=$(running_pid) && port_open "$KAFKA_PORT"; then
      printf '%-12s up     pid %-14s port %-5s controller %s\n' "kafka-node-$n" "$pid" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
    else
      printf '%-12s down   %-18s port %-5s\n' "kafka-node-$n" "" "$KAFKA_PORT"
      rc=1
    fi
  done
  return $rc
}

cmd_pid() { select_node "$1"; running_pid; }

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_cluster_start ;;
  stop) cmd_cluster_stop ;;
  status) cmd_cluster_status ;;
  start-node) cmd_start_node "${2:?usage: kafka-cluster.sh start-node N}" ;;
  stop-node) cmd_stop_node "${2:?usage: kafka-cluster.sh stop-node N}" ;;
  kill-node) cmd_kill_node "${2:?usage: kafka-cluster.sh kill-node N}" ;;
  pid) cmd_pid "${2:?usage: kafka-cluster.sh pid N}" ;;
  bootstrap) cluster_bootstrap; echo ;;
  logs) select_node "${2:?usage: kafka-cluster.sh logs N [-f]}"; shift 2; cmd_logs "$@" ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
