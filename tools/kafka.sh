#!/usr/bin/env bash
# Apache Kafka (KRaft) on loopback for sluice's tests and benchmarks.
#
#   tools/kafka.sh start [--brokers 1|3] [--dir DIR]   prints the bootstrap servers
#   tools/kafka.sh stop [--dir DIR]
#   tools/kafka.sh signal --dir DIR NODE SIGNAL          e.g. 2 STOP, 2 CONT, 1 KILL
#   tools/kafka.sh restart-node --dir DIR NODE           starts a stopped/killed node again
#
# The broker comes from Maven Central (tools/kafka/pom.xml: one pinned
# version with its runtime dependencies); the jars are copied once into
# DIR/libs (Maven's own cache, ~/.m2, keeps the download). Every start
# formats fresh data under DIR (default build/kafka) on free loopback
# ports; each node is broker and controller. With 3 brokers: replication
# factor 3 and min.insync.replicas 2 by default. The broker keeps Kafka's
# defaults otherwise (auto.create.topics.enable stays on, as in a default
# Kafka); DIR/nodeN/server.properties has the whole configuration and
# DIR/nodeN/server.log the broker's log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
pom=$here/kafka/pom.xml

die() { echo "kafka.sh: $*" >&2; exit 1; }

cmd=${1:-}; [ $# -gt 0 ] && shift
brokers=1
dir=$root/${SLUICE_BUILD_DIR:-build}/kafka
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --brokers) brokers=${2:?--brokers needs 1 or 3}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
case $brokers in 1|3) ;; *) die "--brokers must be 1 or 3" ;; esac
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# Java 17 and Maven, installed from Debian's packages when missing.
need_tools() {
  command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 &&
    command -v kcat >/dev/null 2>&1 && return 0
  bash "$here/deps.sh" openjdk-17-jre-headless maven kcat
}

# The broker's jars in DIR/libs (or SLUICE_KAFKA_LIBS: clusters started by
# the specs share the suite's), fetched again only when the pom changes.
libs=${SLUICE_KAFKA_LIBS:-$dir/libs}
fetch() {
  if [ -f "$libs/.pom" ] && cmp -s "$pom" "$libs/.pom"; then return 0; fi
  echo "kafka.sh: fetching Apache Kafka from Maven Central ($pom)" >&2
  rm -rf "$libs"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$libs" >"$dir/maven.log" 2>&1 \
    || { cat "$dir/maven.log" >&2; die "maven could not fetch the broker"; }
  cp "$pom" "$libs/.pom"
}

free_ports() {  # N free loopback ports, one per line
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

node_alive() { [ -f "$dir/node$1/pid" ] && kill -0 "$(cat "$dir/node$1/pid")" 2>/dev/null; }

run_node() {  # starts node N in the background; its pid in DIR/nodeN/pid
  local n=$1 nd=$dir/node$1
  # -Xmx: room for the tests' load; the tests run beside other processes.
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$nd" \
    -cp "$libs/*" kafka.Kafka "$nd/server.properties" \
    >"$nd/stdout.log" 2>&1 </dev/null &
  echo $! >"$nd/pid"
}

# Waits until the cluster's metadata lists each of the given nodes (all
# of them running meanwhile).
wait_serving() {
  local bootstrap=$1 deadline=$((SECONDS + ${SLUICE_KAFKA_START_TIMEOUT:-90})) n meta ok
  shift
  while [ $SECONDS -lt $deadline ]; do
    for n in "$@"; do node_alive "$n" || return 1; done
    meta=$(kcat -b "$bootstrap" -L -m 5 2>/dev/null || true)
    ok=1
    for n in "$@"; do grep -q "^  broker $n at " <<<"$meta" || ok=0; done
    [ $ok -eq 1 ] && return 0
    sleep 0.3
  done
  return 1
}

stop_nodes() {
  local pids=() n p
  rm -f "$dir/bootstrap"
  for n in 1 2 3; do
    [ -f "$dir/node$n/pid" ] || continue
    p=$(cat "$dir/node$n/pid")
    kill -CONT "$p" 2>/dev/null || true   # a SIGSTOPped node cannot stop
    kill -TERM "$p" 2>/dev/null && pids+=("$p")
    rm -f "$dir/node$n/pid"
  done
  local deadline=$((SECONDS + 30))
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
}

configure() {  # writes DIR/nodeN/server.properties on fresh ports, formats the data
  local ports n voters="" rf=$brokers isr=1
  [ "$brokers" -eq 3 ] && isr=2
  mapfile -t ports < <(free_ports $((brokers * 2)))
  for n in $(seq 1 "$brokers"); do
    voters+="${voters:+,}$n@127.0.0.1:${ports[$((brokers + n - 1))]}"
  done
  local cluster_id
  cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  # A leading '-' would be read by the storage tool as an option.
  cluster_id=${cluster_id/#-/A}
  bootstrap=""
  for n in $(seq 1 "$brokers"); do
    local nd=$dir/node$n port=${ports[$((n - 1))]} cport=${ports[$((brokers + n - 1))]}
    bootstrap+="${bootstrap:+,}127.0.0.1:$port"
    rm -rf "$nd"; mkdir -p "$nd/data"
    cat >"$nd/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$nd/data
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
# As Kafka's shipped config/server.properties: a group's first member
# does not wait 3 s for others to join.
group.initial.rebalance.delay.ms=0
EOF
  done
  local pids=()
  for n in $(seq 1 "$brokers"); do
    java -cp "$libs/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
      -Dkafka.logs.dir="$dir/node$n" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/node$n/server.properties" >"$dir/node$n/format.log" 2>&1 &
    pids+=($!)
  done
  for n in "${!pids[@]}"; do
    wait "${pids[$n]}" || { cat "$dir/node$((n + 1))/format.log" >&2; die "formatting node $((n + 1)) failed"; }
  done
  echo "$bootstrap" >"$dir/bootstrap"
  echo "$brokers" >"$dir/brokers"
}

log_config() {
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = warn
EOF
}

start() {
  need_tools
  stop_nodes
  fetch
  log_config
  local attempt n
  for attempt in 1 2 3; do   # a port taken between choosing and binding: again
    configure
    for n in $(seq 1 "$brokers"); do run_node "$n"; done
    if wait_serving "$bootstrap" $(seq 1 "$brokers"); then
      echo "$bootstrap"
      return 0
    fi
    echo "kafka.sh: the broker did not start (attempt $attempt); its log:" >&2
    tail -n 20 "$dir/node1/server.log" "$dir/node1/stdout.log" >&2 2>/dev/null || true
    stop_nodes
  done
  die "Kafka did not start"
}

case $cmd in
  start) start ;;
  stop) stop_nodes ;;
  signal)
    [ ${#args[@]} -eq 2 ] || die "usage: kafka.sh signal --dir DIR NODE SIGNAL"
    kill -"${args[1]}" "$(cat "$dir/node${args[0]}/pid")" ;;
  restart-node)
    [ ${#args[@]} -eq 1 ] || die "usage: kafka.sh restart-node --dir DIR NODE"
    node_alive "${args[0]}" && die "node ${args[0]} is running"
    run_node "${args[0]}"
    wait_serving "$(cat "$dir/bootstrap")" "${args[0]}" || die "node ${args[0]} did not come back" ;;
  *) die "usage: kafka.sh start [--brokers 1|3] [--dir DIR] | stop [--dir DIR] | signal --dir DIR NODE SIG | restart-node --dir DIR NODE" ;;
esac
