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
#   kafka-cluster.sh topics                    create the pipeline's topics (as the admin)
#   kafka-cluster.sh grant | revoke            grant (revoke) the users' ACLs on them; both for
#                                              the topic and group names the NEXANEST_KAFKA__*
#                                              settings give (environment, .env); start does both
#   kafka-cluster.sh env ROLE                  NEXANEST_KAFKA__* lines that connect as ROLE
#                                              (admin, producer, consumer, ops), password included
#
# Security: every listener authenticates, every request is authorized. Clients and
# inter-broker traffic use SASL_PLAINTEXT with SCRAM-SHA-512 on 1909N; the controller
# listener uses SASL_PLAINTEXT with PLAIN (KRaft cannot use SCRAM there: the SCRAM
# credentials live in the metadata log the controllers serve), as the admin. The
# StandardAuthorizer denies what no ACL allows; the only super user is nexanest-admin.
# Users (passwords in .env, by deploy/local/env.sh), created when the storage is formatted:
#   nexanest-admin     super user: brokers, controllers, topic creation, ACLs
#   nexanest-producer  Write ticks, ticks.backfill and the events topic; Describe ticks.dlq
#   nexanest-consumer  Read ticks, ticks.backfill; Write ticks.dlq and the events topic;
#                      Read the groups named <consumer group>*
#   nexanest-ops       the CLI tools: Read every pipeline topic, Write ticks (dlq replay),
#                      the groups <consumer group>* and the dlq replay group
#
# Node N: broker 127.0.0.1:1909(N+1), controller 127.0.0.1:1919(N+1), state, pid and
# logs in $STATE_DIR/kafka-cluster/node-N. Replication factor 3, min.insync.replicas=2,
# unclean leader election off, internal topics at replication 3: with acks=all a write
# is on two nodes before it is acknowledged, and one node may die without data loss
# or a stop of writes.
#
# Environment: NEXANEST_KAFKA_CLUSTER_HEAP (default "-Xms256m -Xmx384m", per node).
# The single broker of kafka.sh (9092) stays PLAINTEXT on loopback: it is the shared
# development broker, and nothing there is worth the cost of a login per test client.
SERVICE_NAME=kafka-cluster
. "$(dirname "$0")/kafka.sh"

CLUSTER_STATE="$STATE_DIR/kafka-cluster"
CLUSTER_ID_FILE="$CLUSTER_STATE/cluster.id"
CLUSTER_NODES=(1 2 3)
CLUSTER_BROKER_BASE=19091     # node N listens on 19091 + N
CLUSTER_CONTROLLER_BASE=19191 # its controller on 19191 + N
KAFKA_HEAP=${NEXANEST_KAFKA_CLUSTER_HEAP:--Xms256m -Xmx384m}
# The admin's client login for the tools (TopicCommand, AclCommand), mode 600.
KAFKA_CLIENT_CONFIG="$CLUSTER_STATE/admin.properties"
# Holds the fingerprint of the SCRAM users the storage was formatted with; a cluster
# formatted without them (an older script) or with other passwords (a new .env) is
# formatted again: reformat_stale_cluster.
SASL_MARKER="$CLUSTER_STATE/sasl-formatted"
ROLES=(admin producer consumer ops)

# user ROLE / password ROLE: the SCRAM user of ROLE and its password from .env.
user() { printf 'nexanest-%s' "$1"; }
password() {
  case "$1" in admin | producer | consumer | ops) ;; *) die "no role '$1' (roles: ${ROLES[*]})" ;; esac
  local key
  key="NEXANEST_KAFKA_$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  grep -qE "^$key=" "$ENV_FILE" 2>/dev/null || die "no $key in $ENV_FILE: run deploy/local/env.sh"
  env_value "$key"
}

# Every role's password is in .env, checked here in the script's own shell: `password`
# runs inside $(...), where a missing one would only end the subshell.
require_passwords() {
  local role key
  for role in "${ROLES[@]}"; do
    key="NEXANEST_KAFKA_$(printf '%s' "$role" | tr '[:lower:]' '[:upper:]')_PASSWORD"
    grep -qE "^$key=." "$ENV_FILE" 2>/dev/null || die "no $key in $ENV_FILE: run deploy/local/env.sh"
  done
}

write_client_config() {
  require_passwords
  mkdir -p "$CLUSTER_STATE"
  (
    umask 077
    cat >"$KAFKA_CLIENT_CONFIG" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$(user admin)" password="$(password admin)";
EOF
  )
}

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
  local admin_user admin_pw
  admin_user=$(user admin)
  admin_pw=$(password admin)
  # It holds the admin's password.
  (umask 077; : >"$KAFKA_CONFIG")
  chmod 600 "$KAFKA_CONFIG"
  cat >"$KAFKA_CONFIG" <<EOF
# Written by deploy/local/kafka-cluster.sh on every start; edit the script, not this file.
# Node $NODE_ID of a three-node KRaft cluster: broker and controller in one process, loopback only.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$(quorum_voters)
controller.listener.names=CONTROLLER
listeners=SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT

# Authentication: SCRAM-SHA-512 for clients and between brokers (as the admin); PLAIN
# between brokers and controllers (SCRAM credentials are served by the controllers
# themselves), with the admin as the one user the controller listener knows.
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$admin_user" password="$admin_pw";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$admin_user" password="$admin_pw" user_$admin_user="$admin_pw";

# Authorization: what no ACL allows is denied; the admin alone is a super user.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$admin_user

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

# kafka.sh's format_storage, for a static quorum: no --standalone, one cluster id for
# all nodes, and every role's SCRAM user in the metadata from the start (the brokers
# log in to each other as the admin, so it must exist before any broker runs).
format_storage() {
  if [ -f "$KAFKA_DATA/meta.properties" ]; then return 0; fi
  local cluster_id role scram_args
  mkdir -p "$CLUSTER_STATE"
  if [ ! -s "$CLUSTER_ID_FILE" ]; then
    cluster_id=$(tool_java kafka.tools.StorageTool random-uuid | tail -n 1)
    [ -n "$cluster_id" ] || die "could not generate a cluster id"
    printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
  fi
  cluster_id=$(cat "$CLUSTER_ID_FILE")
  # The passwords go in an argument file (kafka-storage reads @FILE, one argument a
  # line), mode 600, never on the command line: every local user can read an argv.
  scram_args="$CLUSTER_STATE/format-args.$$"
  (
    umask 077
    for role in "${ROLES[@]}"; do
      printf -- '--add-scram\nSCRAM-SHA-512=[name=%s,password=%s]\n' "$(user "$role")" "$(password "$role")"
    done >"$scram_args"
  )
  log "formatting $KAFKA_DATA (node $NODE_ID, cluster id $cluster_id, SCRAM users ${ROLES[*]})"
  if ! tool_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONFIG" "@$scram_args" >/dev/null; then
    rm -f "$scram_args"
    die "kafka-storage format failed for node $NODE_ID"
  fi
  rm -f "$scram_args"
  rm -f "$SASL_MARKER"
  (umask 077 && credentials_fingerprint >"$SASL_MARKER")
}

# A sha256 of every role's user:password: tells whether the storage holds the SCRAM
# users of the passwords in .env now (the marker keeps it, never a password).
credentials_fingerprint() {
  local role
  for role in "${ROLES[@]}"; do
    printf '%s:%s\n' "$(user "$role")" "$(password "$role")"
  done | sha256sum | cut -d' ' -f1
}

# A cluster formatted by the PLAINTEXT version of this script has no SCRAM users, and
# one formatted before .env's passwords were made anew (a new clone, a deleted .env)
# has other ones: neither can be fixed offline. It is a local test cluster of a day's
# retention, so all of it is formatted anew (once, before any node starts).
reformat_stale_cluster() {
  local n formatted=no
  [ -f "$SASL_MARKER" ] && [ "$(cat "$SASL_MARKER")" = "$(credentials_fingerprint)" ] && return 0
  for n in "${CLUSTER_NODES[@]}"; do
    select_node "$n"
    if running_pid >/dev/null; then
      die "node $n runs without the SCRAM users of .env's passwords (an older cluster): kafka-cluster.sh stop, then start"
    fi
    [ -f "$KAFKA_DATA/meta.properties" ] && formatted=yes
  done
  [ "$formatted" = yes ] || return 0
  log "the cluster was formatted without the SCRAM users of .env's passwords: removing its data to format it again"
  for n in "${CLUSTER_NODES[@]}"; do
    select_node "$n"
    rm -rf "$KAFKA_DATA"
  done
  rm -f "$CLUSTER_ID_FILE"
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
  write_client_config
  reformat_stale_cluster
  local n launched=()
  # All three first: a node answers only once a majority of the controllers is up.
  for n in "${CLUSTER_NODES[@]}"; do
    if launch_node "$n"; then launched+=("$n"); fi
  done
  for n in "${launched[@]}"; do
    select_node "$n"
    wait_broker
  done
  if [ "${#launched[@]}" -gt 0 ]; then cmd_topics; cmd_acls add; fi
  log "cluster up on $(cluster_bootstrap)"
}

# acl OP ROLES ARGS...: one AclCommand (one JVM) as the admin, for the users of the
# comma-separated ROLES, in the background (acls_wait collects them): on two cores the
# JVMs' start-up dominates, and the bindings are independent of each other.
ACL_PIDS=()
acl() {
  local op=$1 role principals=()
  IFS=, read -ra roles <<<"$2"
  shift 2
  for role in "${roles[@]}"; do principals+=(--allow-principal "User:$(user "$role")"); done
  local extra=()
  [ "$op" = remove ] && extra=(--force)
  tool_java org.apache.kafka.tools.AclCommand --bootstrap-server "$(cluster_bootstrap)" \
    --command-config "$KAFKA_CLIENT_CONFIG" "--$op" "${extra[@]}" "${principals[@]}" "$@" >/dev/null &
  ACL_PIDS+=("$!")
}
acls_wait() {
  local pid failed=0
  for pid in "${ACL_PIDS[@]}"; do wait "$pid" || failed=1; done
  ACL_PIDS=()
  [ "$failed" -eq 0 ] || die "kafka-acls failed (run again: grant and revoke are idempotent)"
}

# topic_names: the pipeline's topics and groups as the settings name them.
topic_names() {
  ticks=$(env_setting NEXANEST_KAFKA__TICKS_TOPIC ticks)
  dlq=$(env_setting NEXANEST_KAFKA__DEAD_LETTER_TOPIC ticks.dlq)
  events=$(env_setting NEXANEST_KAFKA__EVENTS_TOPIC system_events)
  backfill=$(env_setting NEXANEST_KAFKA__BACKFILL_TOPIC ticks.backfill)
  group=$(env_setting NEXANEST_KAFKA__CONSUMER_GROUP nexanest-ticks-to-timescale)
  replay=$(env_setting NEXANEST_KAFKA__DLQ_REPLAY_GROUP nexanest-dlq-replay)
}

# The pipeline's topics, created by the admin with the cluster's replication (the
# users may not create topics).
cmd_topics() {
  require_installed
  ensure_java
  write_client_config
  local ticks dlq events backfill group replay partitions t pids=()
  topic_names
  partitions=$(env_setting NEXANEST_KAFKA__PARTITIONS 6)
  for t in "$ticks" "$dlq" "$backfill" "$events"; do
    tool_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$(cluster_bootstrap)" \
      --command-config "$KAFKA_CLIENT_CONFIG" --create --if-not-exists --topic "$t" \
      --partitions "$([ "$t" = "$events" ] && echo 1 || echo "$partitions")" --replication-factor 3 >/dev/null &
    pids+=("$!")
  done
  for t in "${pids[@]}"; do wait "$t" || die "cannot create the pipeline's topics"; done
  log "topics $ticks, $dlq, $backfill, $events"
}

# Each role's ACLs on the pipeline's topics and groups: least privilege, as the
# databases' roles have. OP is add or remove.
cmd_acls() {
  local op=$1
  require_installed
  ensure_java
  write_client_config
  local ticks dlq events backfill group replay
  topic_names
  if [ "$op" = remove ]; then
    # Every binding on the test's or user's resources, whoever holds it (the cluster-wide
    # IdempotentWrite stays: other topic sets share it).
    acl remove "" --topic "$ticks" --topic "$dlq" --topic "$events" --topic "$backfill"
    acl remove "" --resource-pattern-type prefixed --group "$group" --group "$replay"
    acls_wait
    log "ACLs removed for topics $ticks, $dlq, $backfill, $events and groups $group*, $replay*"
    return
  fi
  # Producing at all (idempotent producers): the producer, the consumer (DLQ and
  # events) and the tools (dlq replay).
  acl add producer,consumer,ops --operation IdempotentWrite --cluster
  # The producer publishes ticks (live and history) and its feed's system events; it
  # sees that the DLQ exists (ensure_topics) but cannot write it.
  acl add producer --operation Write --operation Describe --topic "$ticks" --topic "$backfill" --topic "$events"
  acl add producer --operation Describe --topic "$dlq"
  # The consumer reads ticks, dead-letters, reports events, and commits in its groups
  # (<group>, <group>.backfill, <group>.notifications-ops: one prefix); the tools read
  # every topic (status, dlq list, events tail) and put dead letters back on ticks.
  acl add consumer,ops --operation Read --operation Describe --topic "$ticks" --topic "$backfill"
  acl add consumer --operation Write --operation Describe --topic "$dlq" --topic "$events"
  acl add ops --operation Read --operation Describe --topic "$dlq" --topic "$events"
  acl add ops --operation Write --topic "$ticks"
  acl add consumer,ops --operation Read --operation Describe --resource-pattern-type prefixed --group "$group"
  acl add ops --operation Read --operation Describe --resource-pattern-type prefixed --group "$replay"
  acls_wait
  log "ACLs granted for topics $ticks, $dlq, $backfill, $events and groups $group*, $replay*"
}

# NEXANEST_KAFKA__* lines that make a nexanest process connect to the cluster as ROLE.
cmd_env() {
  local role=${1:?usage: kafka-cluster.sh env admin|producer|consumer|ops}
  require_passwords
  case "$role" in admin | producer | consumer | ops) ;; *) die "no role '$role' (roles: ${ROLES[*]})" ;; esac
  printf 'NEXANEST_KAFKA__BOOTSTRAP_SERVERS=%s\n' "$(cluster_bootstrap)"
  printf 'NEXANEST_KAFKA__REPLICATION_FACTOR=3\n'
  printf 'NEXANEST_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT\n'
  printf 'NEXANEST_KAFKA__SASL_MECHANISM=SCRAM-SHA-512\n'
  printf 'NEXANEST_KAFKA__SASL_USERNAME=%s\n' "$(user "$role")"
  printf 'NEXANEST_KAFKA__SASL_PASSWORD=%s\n' "$(password "$role")"
}

cmd_start_node() {
  ensure_dirs
  require_installed
  ensure_java
  write_client_config
  reformat_stale_cluster
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
  local n pid pids=()
  for n in "${CLUSTER_NODES[@]}"; do
    select_node "$n"
    if pid=$(running_pid); then
      log "stopping node $n (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  [ ${#pids[@]} -eq 0 ] || await_exit 30 "the cluster's nodes" "${pids[@]}"
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
  topics) cmd_topics ;;
  grant) cmd_acls add ;;
  revoke) cmd_acls remove ;;
  env) cmd_env "${2:-}" ;;
  logs) select_node "${2:?usage: kafka-cluster.sh logs N [-f]}"; shift 2; cmd_logs "$@" ;;
  *)
    sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
