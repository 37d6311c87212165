#!/usr/bin/env bash
# sluice's benchmarks: every scenario, for sluice (LuaJIT and Lua 5.4), the
# tutorial's Node peers and the limits (librdkafka alone, libwebsockets
# alone, the C-only ingest path), in one run, against one broker: the
# embedded one (default) or Apache Kafka (--kafka apache).
#
#   bench/run.sh [--smoke] [--repeat N] [--build DIR] [--out DIR] [--only LIST]
#                [--impls LIST] [--base DIR] [--kafka embedded|apache]
#
# --smoke     tiny loads, one repetition, a few seconds per scenario: checks
#             the harness end to end (ctest bench.smoke)
# --repeat N  repetitions of the throughput and latency scenarios (default 3;
#             the median is reported)
# --build DIR build tree (default build-bench, configured Release if absent)
# --out DIR   where results go (default bench/results): raw.jsonl (one line
#             per measurement), latest.md, latest.json, chart.png, logs/
# --only LIST comma-separated scenarios: limits,ingest,fanout,roundtrip,
#             connections,overload,idle
# --impls LIST the implementations the ingest, fan-out and overload
#             scenarios measure (default: all of them); sluice-luajit-w2 and
#             sluice-lua5.4-w2 run the gateway with --workers 2
# --base DIR  a build tree of another commit (its source tree beside it):
#             its gateways join as base-luajit and base-lua5.4 (and
#             base-luajit-lua, base-lua5.4-lua: its plain Lua route), so that a
#             change is measured against its base in the same run, e.g.
#             --only ingest --impls sluice-luajit,base-luajit --base DIR
# --kafka K   embedded (default): librdkafka's mock cluster in a sluice
#             process of its own, started afresh for each measurement;
#             apache: one Apache Kafka broker on loopback for the whole run
#             (tools/kafka.sh, data under BUILD/bench-kafka, stopped at
#             exit), each measurement on fresh topics of 4 partitions
#             (the embedded broker's count) under a prefix of its own
# --fifo      the round trip also runs once more, ack only, with the broker,
#             the gateway and the load generator under SCHED_FIFO
#             (`chrt -f 1`; root or CAP_SYS_NICE): recorded as IMPL-fifo, the
#             path's own latency without waiting for a shared core (with
#             --kafka apache the broker's JVM keeps its own policy)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-bench
OUT=
SMOKE=0
REPEAT=3
ONLY=limits,ingest,fanout,roundtrip,connections,overload,idle
IMPLS=
BASE=
KAFKA_MODE=embedded
FIFO=0
CHRT=
ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --repeat) REPEAT=$2; shift ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --impls) IMPLS=${2//,/ }; shift ;;
    --base) BASE=$(cd "$2" && pwd); shift ;;
    --kafka) KAFKA_MODE=$2; shift ;;
    --fifo) FIFO=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set/!p}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case $KAFKA_MODE in embedded|apache) ;; *) echo "run.sh: --kafka must be embedded or apache" >&2; exit 2 ;; esac
if [ "$FIFO" = 1 ] && ! chrt -f 1 true 2>/dev/null; then
  echo "run.sh: --fifo needs chrt and the right to use SCHED_FIFO (root or CAP_SYS_NICE)" >&2; exit 2
fi
OUT=${OUT:-$ROOT/bench/results}
COMMAND="bench/run.sh${ARGS:+ $ARGS}"
[ "$SMOKE" = 1 ] && REPEAT=1

# ---- sizes ------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
  KROWS=5000 LROWS=10000 IROWS=3000 NCROWS=2000 NNROWS=300
  FAN_CONNS=20 FAN_RECORDS=50 RT_RATES="1000" RT_SECS=1 CATCHUP_CLIENTS=2 CATCHUP_RECORDS=500
  IDLE_CONNS=200 OVERLOAD_S=2 IDLE_S=1 BIG_CONNS=50 IDLE_HOLD=1.5 IDLE_SETTLE=0.5
  # one sluice and one Node peer where a scenario is slow to set up
  SLUICES="sluice-lua5.4" PEERS="node-careful" CONN_SET="10"
else
  KROWS=500000 LROWS=1000000 IROWS=600000 NCROWS=150000 NNROWS=20000
  FAN_CONNS=1000 FAN_RECORDS=1000 RT_RATES="1000 10000 50000" RT_SECS=3 CATCHUP_CLIENTS=8 CATCHUP_RECORDS=20000
  IDLE_CONNS=10000 OVERLOAD_S=30 IDLE_S=10 BIG_CONNS=1000 IDLE_HOLD=4 IDLE_SETTLE=2
  SLUICES="sluice-luajit sluice-lua5.4" PEERS="node-careful node-naive" CONN_SET="10 1000"
fi

# The round trip's echo consumer polls with fetch.wait.max.ms=10: the
# embedded broker answers a fetch that finds no new record only after the
# whole wait (librdkafka's mock cannot wake it when a record arrives), so
# with librdkafka's default of 500 ms the receipt latency measures that
# wait, not sluice. A real broker answers as soon as data arrives: on
# Apache Kafka the consumer keeps librdkafka's defaults.
RT_FETCH_WAIT=10
[ "$KAFKA_MODE" = apache ] && RT_FETCH_WAIT=

# ---- build ------------------------------------------------------------------
TOOLS="sluice-loadgen sluice-kprod sluice-lwsrecv sluice-cingest"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
if [ "$SMOKE" = 0 ] || [ ! -x "$BUILD/bench/sluice-loadgen" ]; then
  cmake --build "$BUILD" -j2 >/dev/null
fi
B=$BUILD/bench
LOADGEN=$B/sluice-loadgen
for t in $TOOLS; do [ -x "$B/$t" ] || { echo "run.sh: $B/$t missing" >&2; exit 1; }; done
[ -d "$ROOT/bench/peers/node_modules/kafkajs" ] || (cd "$ROOT/bench/peers" && npm ci --no-audit --no-fund >/dev/null)

mkdir -p "$OUT/logs"
RAW=$OUT/raw.jsonl
: >"$RAW"
rm -f "$OUT"/logs/*
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export KAFKAJS_NO_PARTITIONER_WARNING=1

# ---- processes --------------------------------------------------------------
PIDS=()
KDIR=
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$KDIR" ]; then   # Apache Kafka: stopped, its data (GBs after a full run) gone, its log kept
    "$ROOT/tools/kafka.sh" stop --dir "$KDIR" >/dev/null 2>&1 || true
    rm -rf "$KDIR"/node*/data
  fi
}
trap cleanup EXIT
trap 'exit 130' INT   # (the EXIT trap then stops what runs)
trap 'exit 143' TERM
. "$ROOT/bench/lib.sh"   # stop_pid, free_port, port_open, http_get, rss_kb
hwm_kb() {   # of PID and its children, added up
  local p t=0
  for p in "$1" $(workers_of "$1"); do
    t=$((t + $(awk '/^VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
cpu_ticks() {   # of PID and its children (the workers of --workers)
  local p t=0
  for p in "$1" $(workers_of "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
workers_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -s ' \n' ' '; }
# the main thread's alone (the loop: WebSockets, Lua; librdkafka has its own)
main_ticks() { awk '{print $14 + $15}' "/proc/$1/task/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)
logfile() { echo "$OUT/logs/$1.log"; }   # appended to: one file per program

# The broker: one sluice process hosting only the embedded broker.
KPORT= KAFKA= BROKER_PID=
# Every topic a measurement uses is named $PREFIX + name: "" on the
# embedded broker (each measurement has a broker of its own), bench<N>-
# on Apache Kafka (each measurement has topics of its own).
PREFIX=
start_broker() {
  [ -n "$BROKER_PID" ] && stop_pid "$BROKER_PID"
  KPORT=$(free_port)
  KAFKA=127.0.0.1:$KPORT
  local log; log=$(logfile broker)
  BROKER_CMD="$BUILD/bin/sluice-lua5.4 run bench/apps/broker.lua --embedded-port $KPORT"
  (cd "$ROOT" && exec $CHRT $BROKER_CMD) >>"$log" 2>&1 &
  BROKER_PID=$!; PIDS+=("$BROKER_PID")
  local i
  for i in $(seq 1 100); do
    kcat -b "$KAFKA" -L -t movie-stats -m 2 2>/dev/null | grep -q "4 partitions" && return 0
    sleep 0.2
  done
  echo "run.sh: broker did not start (see $log)" >&2; exit 1
}

# Apache Kafka: one broker (KRaft, broker and controller in one process)
# on a free loopback port, for the whole run.
start_apache() {
  KDIR=$BUILD/bench-kafka
  note "starting Apache Kafka (tools/kafka.sh start --brokers 1 --dir $KDIR)"
  KAFKA=$("$ROOT/tools/kafka.sh" start --brokers 1 --dir "$KDIR" 2>>"$(logfile kafka)" | tail -1) || true
  [ -n "$KAFKA" ] || { echo "run.sh: Apache Kafka did not start (see $(logfile kafka))" >&2; exit 1; }
}

# The broker's process: the embedded broker's sluice, or Apache Kafka's JVM.
broker_pid() { if [ -n "$KDIR" ]; then cat "$KDIR/node1/pid"; else echo "$BROKER_PID"; fi; }

# A fresh Kafka for the next measurement: a new embedded broker, or new
# topics on Apache Kafka, created before any gateway starts (consumers
# that start at the end find them at once) with the 4 partitions the
# embedded broker gives every topic.
TOPICS="movie-results movie-stats movie-results.dlq bench-kprod"
NFRESH=0
fresh_kafka() {
  if [ "$KAFKA_MODE" = embedded ]; then start_broker; return; fi
  NFRESH=$((NFRESH + 1))
  PREFIX=bench$NFRESH-
  local t list= out
  for t in $TOPICS; do list+=${list:+,}$PREFIX$t; done
  # the spec suite's kafkajs client (admin API; waits until every
  # partition has a leader), with the peers' kafkajs when the specs'
  # npm packages are not installed
  out=$(cd "$ROOT" && NODE_PATH=$ROOT/bench/peers/node_modules \
        node spec/clients/kafkajs.js --brokers "$KAFKA" --topic "$list" --create 4 2>>"$(logfile topics)") ||
    { echo "run.sh: creating topics $list failed: $out" >&2; exit 1; }
}

# start_impl IMPL [ECHO] -> PID, PORT, SERVER_CMD
PID= PORT= SERVER_CMD=
start_impl() {
  local impl=$1 echo=${2:-0} log i env=
  PORT=$(free_port)
  log=$(logfile "$impl")
  # the gateways' topics and consumer groups (the movies app's prefix)
  [ -n "$PREFIX" ] && env="SLUICE_MOVIES_PREFIX=$PREFIX "
  export SLUICE_MOVIES_PREFIX=$PREFIX
  case "$impl" in
    sluice-luajit|sluice-lua5.4|sluice-luajit-processing|sluice-luajit-w2|sluice-lua5.4-w2)
      local bin=${impl%-processing} proc=0 workers=
      [ "$bin" != "$impl" ] && proc=1
      # -w2: two worker processes on the port (--workers 2)
      [ "${bin%-w2}" != "$bin" ] && { bin=${bin%-w2}; workers="--workers 2"; }
      SERVER_CMD="$BUILD/bin/$bin run bench/apps/movies.lua --listen $PORT --kafka $KAFKA --log-level warn${workers:+ $workers}"
      [ "$echo" = 1 ] && SERVER_CMD="SLUICE_BENCH_ECHO=1 ${RT_FETCH_WAIT:+SLUICE_BENCH_FETCH_WAIT=$RT_FETCH_WAIT }$SERVER_CMD"
      [ "$proc" = 1 ] && SERVER_CMD="SLUICE_BENCH_PROCESSING=1 $SERVER_CMD"
      SERVER_CMD=$env$SERVER_CMD
      (cd "$ROOT" && export SLUICE_BENCH_ECHO=$echo SLUICE_BENCH_PROCESSING=$proc SLUICE_BENCH_FETCH_WAIT=$RT_FETCH_WAIT && exec $CHRT $BUILD/bin/$bin run bench/apps/movies.lua \
         --listen "$PORT" --kafka "$KAFKA" --log-level warn $workers) >>"$log" 2>&1 & ;;
    sluice-luajit-lua|sluice-lua5.4-lua|sluice-luajit-transform|sluice-lua5.4-transform)
      # the movies app's "/" as a plain Lua route or with a Lua transform
      local bin=${impl%-*} kind=${impl##*-}
      SERVER_CMD="${env}SLUICE_BENCH_ROUTE=$kind $BUILD/bin/$bin run bench/apps/routes.lua --listen $PORT --kafka $KAFKA --log-level warn"
      (cd "$ROOT" && export SLUICE_BENCH_ROUTE=$kind SLUICE_BENCH_ECHO=0 && exec $BUILD/bin/$bin run bench/apps/routes.lua \
         --listen "$PORT" --kafka "$KAFKA" --log-level warn) >>"$log" 2>&1 & ;;
    base-luajit|base-lua5.4|base-luajit-lua|base-lua5.4-lua)
      # -lua: the base's bench/apps/routes.lua with the plain Lua route
      [ -n "$BASE" ] || { echo "run.sh: $impl needs --base DIR" >&2; exit 2; }
      local src; src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BASE/CMakeCache.txt")
      local bin=${impl#base-} app=movies
      [ "${bin%-lua}" != "$bin" ] && { bin=${bin%-lua}; app=routes; }
      local cmd="$BASE/bin/sluice-$bin run bench/apps/$app.lua --listen $PORT --kafka $KAFKA --log-level warn"
      SERVER_CMD=$env$cmd
      (cd "$src" && export SLUICE_BENCH_ECHO=0 SLUICE_BENCH_PROCESSING=0 SLUICE_BENCH_ROUTE=lua && exec $cmd) >>"$log" 2>&1 & ;;
    c-ingest)
      SERVER_CMD="$B/sluice-cingest --listen $PORT --kafka $KAFKA --topic ${PREFIX}movie-results"
      (exec $CHRT $SERVER_CMD) >>"$log" 2>&1 & ;;
    node-careful|node-naive)
      SERVER_CMD="node bench/peers/server.js --mode ${impl#node-} --port $PORT --kafka $KAFKA --topic ${PREFIX}movie-results"
      (cd "$ROOT" && exec $SERVER_CMD) >>"$log" 2>&1 & ;;
    *) echo "run.sh: unknown impl $impl" >&2; exit 2 ;;
  esac
  PID=$!; PIDS+=("$PID")
  for i in $(seq 1 150); do
    case "$impl" in
      # both workers up: each one's console answers
      sluice-*-w2) [ "$($BUILD/bin/sluice-lua5.4 attach "$PID" --eval 'app.started' 2>/dev/null | grep -c true)" = 2 ] && return 0 ;;
      sluice-*|base-*) http_get "$PORT" /bench/ready | grep -q assigned && return 0 ;;
      *) port_open "$PORT" && { sleep 0.3; return 0; } ;;
    esac
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "run.sh: $impl did not start (see $log)" >&2; exit 1
}
# Rows first, not measured: connections to Kafka, metadata, the idempotent
# producer's id, (for LuaJIT) the JIT and the Lua heap are warm before
# measuring.
warmup() {
  local impl=$1 n=5000 mode="--mode ack"
  case "$impl" in
    node-naive) n=100; mode="--mode send --kafka $KAFKA --topic ${PREFIX}movie-results" ;;
    node-*) mode="--mode send --kafka $KAFKA --topic ${PREFIX}movie-results" ;;
  esac
  $LOADGEN --url "ws://127.0.0.1:$PORT/" $mode --conns 10 --rows $n --timeout 60 >/dev/null 2>>"$(logfile warmup)" || true
}
# Wait until the sluice gateway's consumers hold N partitions.
wait_assigned() {
  local i
  for i in $(seq 1 200); do
    local a
    case "$impl" in
      # every worker's consumers: the fewest any of them holds
      sluice-*-w2) a=$($BUILD/bin/sluice-lua5.4 attach "$PID" --eval 'stats().assigned' 2>/dev/null |
                       awk '{n = $NF + 0; if (c == 0 || n < m) m = n; c++} END {print (c == 2 ? m : 0)}') ;;
      *) a=$(http_get "$PORT" /bench/ready | sed -n 's/.*"assigned":\([0-9]*\).*/\1/p') ;;
    esac
    [ -n "$a" ] && [ "$a" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "run.sh: consumers of $PORT never got $1 partitions" >&2; exit 1
}

# record SCENARIO IMPL REP RESULT_JSON EXTRA_JSON_FIELDS COMMAND
record() {
  local cmd=${6//\\/\\\\}; cmd=${cmd//\"/\\\"}
  local server=${SERVER_CMD//\"/\\\"}
  [ -n "$4" ] || { echo "run.sh: $1/$2 produced no result" >&2; exit 1; }
  printf '{"scenario":"%s","impl":"%s","rep":%s,"result":%s%s,"cmd":"%s","server":"%s"}\n' \
    "$1" "$2" "$3" "$4" "${5:+,$5}" "$cmd" "$server" >>"$RAW"
}
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
note() { echo "[$(date +%T) load $(cut -d' ' -f1 /proc/loadavg)] $*" >&2; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
if [ "$KAFKA_MODE" = apache ]; then start_apache; fi
fresh_kafka

# ---- limits ----------------------------------------------------------------
if want limits; then
  for rep in $(seq 1 "$REPEAT"); do
    note "limits: librdkafka alone, rep $rep"
    SERVER_CMD=
    cmd="$B/sluice-kprod --kafka $KAFKA --topic ${PREFIX}bench-kprod --rows $KROWS"
    record limits kafka-alone "$rep" "$($cmd 2>>"$(logfile kprod)")" "" "$cmd"

    for conns in $CONN_SET; do
      note "limits: libwebsockets alone, $conns connections, rep $rep"
      PORT=$(free_port)
      SERVER_CMD="$B/sluice-lwsrecv --listen $PORT --expect $LROWS"
      lwsout=$OUT/logs/lwsrecv.json
      $SERVER_CMD >"$lwsout" 2>>"$(logfile lwsrecv)" &
      LPID=$!; PIDS+=("$LPID")
      for i in $(seq 1 50); do port_open "$PORT" && break; sleep 0.1; done
      cmd="$LOADGEN --url ws://127.0.0.1:$PORT/ --mode send --conns $conns --rows $LROWS"
      $cmd >/dev/null 2>>"$(logfile loadgen)"
      for i in $(seq 1 100); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
      stop_pid "$LPID"
      impl=lws-alone
      [ "$conns" != 10 ] && impl=lws-alone-$conns
      record limits "$impl" "$rep" "$(cat "$lwsout")" "" "$cmd"
    done
  done
fi

# ---- ingest ----------------------------------------------------------------
ingest_one() {   # ingest_one SCENARIO CONNS IMPL REP
  local scen=$1 conns=$2 impl=$3 rep=$4 cmd
  start_impl "$impl"
  case "$impl" in
    node-careful) cmd="$LOADGEN --url ws://127.0.0.1:$PORT/ --mode send --conns $conns --rows $NCROWS --kafka $KAFKA --topic ${PREFIX}movie-results --timeout 120" ;;
    node-naive) cmd="$LOADGEN --url ws://127.0.0.1:$PORT/ --mode send --conns $conns --rows $NNROWS --kafka $KAFKA --topic ${PREFIX}movie-results --timeout 120" ;;
    *) cmd="$LOADGEN --url ws://127.0.0.1:$PORT/ --mode ack --conns $conns --rows $IROWS --timeout 120" ;;
  esac
  warmup "$impl"
  local bpid; bpid=$(broker_pid)
  local t0; t0=$(cpu_ticks "$PID")
  local m0; m0=$(main_ticks "$PID")
  local b0; b0=$(cpu_ticks "$bpid")
  local res; res=$($cmd 2>>"$(logfile loadgen)")
  local hwm; hwm=$(hwm_kb "$PID")
  # the gateway's CPU (all threads, and its main thread) and the broker's
  # during the measured rows
  local cpu; cpu=$(awk -v a="$t0" -v b="$(cpu_ticks "$PID")" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
  local mcpu; mcpu=$(awk -v a="$m0" -v b="$(main_ticks "$PID")" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
  local bcpu; bcpu=$(awk -v a="$b0" -v b="$(cpu_ticks "$bpid")" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
  stop_pid "$PID"
  record "$scen" "$impl" "$rep" "$res" "\"peak_rss_kb\":$hwm,\"cpu_s\":$cpu,\"main_cpu_s\":$mcpu,\"broker_cpu_s\":$bcpu" "$cmd"
}
if want ingest; then
  for conns in $CONN_SET; do
    scen=ingest-$conns
    for rep in $(seq 1 "$REPEAT"); do
      impls="sluice-luajit sluice-lua5.4 sluice-luajit-transform sluice-lua5.4-transform sluice-luajit-lua sluice-lua5.4-lua c-ingest node-careful node-naive"
      # The whole movies app, stream processing included, for information.
      [ "$conns" = 10 ] && [ "$SMOKE" = 0 ] && impls="$impls sluice-luajit-processing"
      # --smoke: each way of starting a server once (the movies app, both
      # kinds of routes.lua, the C path, a Node peer)
      [ "$SMOKE" = 1 ] && impls="sluice-lua5.4 sluice-luajit-transform sluice-lua5.4-lua c-ingest node-careful"
      [ -n "$IMPLS" ] && impls=$IMPLS
      for impl in $impls; do
        note "$scen: $impl, rep $rep"
        # A fresh broker (or fresh topics) for every measurement: each
        # starts empty, and none works against what earlier ones stored
        # (the embedded broker keeps up to 100,000 batches per partition
        # in memory).
        fresh_kafka
        ingest_one "$scen" "$conns" "$impl" "$rep"
      done
    done
  done
fi

# ---- fan-out ---------------------------------------------------------------
if want fanout; then
  fresh_kafka
  # What the catch-ups of fanout-catchup read back (written before any gateway starts).
  $B/sluice-kprod --kafka "$KAFKA" --topic ${PREFIX}movie-stats --rows "$CATCHUP_RECORDS" >/dev/null 2>>"$(logfile kprod)"
  for rep in $(seq 1 "$REPEAT"); do
    for impl in ${IMPLS:-$SLUICES}; do
      # only the movies app serves /stats
      case "$impl" in *-lua|*-transform|c-ingest|node-*) continue ;; esac
      note "fanout: $impl, rep $rep"
      start_impl "$impl"
      wait_assigned 4
      out=$OUT/logs/fanout.json err=$(logfile fanout-loadgen)
      cmd="$LOADGEN --url ws://127.0.0.1:$PORT/stats --mode recv --conns $FAN_CONNS --expect $FAN_RECORDS --timeout 60"
      $cmd >"$out" 2>"$err" &
      LG=$!
      for i in $(seq 1 600); do grep -q "connections open" "$err" && break; sleep 0.1; done
      sleep 0.5
      pcmd="$B/sluice-kprod --kafka $KAFKA --topic ${PREFIX}movie-stats --rows $FAN_RECORDS --stamp"
      # the gateway's CPU from the first record produced to the last delivery
      t0=$(cpu_ticks "$PID"); m0=$(main_ticks "$PID")
      $pcmd >/dev/null 2>>"$(logfile kprod)"
      wait "$LG" || true
      cpu=$(awk -v a="$t0" -v b="$(cpu_ticks "$PID")" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
      mcpu=$(awk -v a="$m0" -v b="$(main_ticks "$PID")" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
      hwm=$(hwm_kb "$PID")
      stop_pid "$PID"
      record fanout "$impl" "$rep" "$(cat "$out")" "\"peak_rss_kb\":$hwm,\"cpu_s\":$cpu,\"main_cpu_s\":$mcpu,\"load1\":$(cut -d' ' -f1 /proc/loadavg)" "$cmd; $pcmd"

      # The same with CATCHUP_CLIENTS subscribers resuming all along, each
      # reading the topic from its start (CATCHUP_RECORDS written before the
      # gateway started, so none of them reaches the /stats clients), then
      # again: the catch-ups run at most 4 at once (the app's default).
      note "fanout-catchup: $impl, rep $rep"
      start_impl "$impl"
      wait_assigned 4
      out=$OUT/logs/fanout-catchup.json err=$(logfile fanout-catchup-loadgen)
      cmd="$LOADGEN --url ws://127.0.0.1:$PORT/stats --mode recv --conns $FAN_CONNS --expect $FAN_RECORDS --timeout 60"
      $cmd >"$out" 2>"$err" &
      LG=$!
      for i in $(seq 1 600); do grep -q "connections open" "$err" && break; sleep 0.1; done
      ccmd="node bench/peers/catchup.js --url ws://127.0.0.1:$PORT/stream --clients $CATCHUP_CLIENTS --since 0:0:-1,1:0:-1,2:0:-1,3:0:-1 --records $CATCHUP_RECORDS"
      (cd "$ROOT" && exec $ccmd) >"$OUT/logs/catchup.json" 2>>"$(logfile catchup)" &
      CU=$!; PIDS+=("$CU")
      sleep 2   # the catch-ups under way
      $pcmd >/dev/null 2>>"$(logfile kprod)"
      wait "$LG" || true
      kill -TERM "$CU" 2>/dev/null; wait "$CU" 2>/dev/null || true
      hwm=$(hwm_kb "$PID")
      stop_pid "$PID"
      record fanout-catchup "$impl" "$rep" "$(cat "$out")" "\"peak_rss_kb\":$hwm,\"catchup\":$(cat "$OUT/logs/catchup.json" || echo null)" "$cmd; $ccmd; $pcmd"
    done
  done
fi

# ---- round trip --------------------------------------------------------------
# Two passes per sluice implementation: with the echo consumer and a client
# on /echo (ack and receipt latency; recorded as IMPL), then the gateway
# alone, no echo consumer and no subscriber (ack latency only; recorded as
# IMPL-ackonly). On the embedded broker the echo consumer fetches almost
# continuously, which slows the acks too; the second pass measures the
# gateway's own send -> Kafka stored -> ack path.
# ackonly_pass IMPL LABEL REP: the gateway alone, ack latency at each rate
# (under $CHRT when set), recorded as LABEL.
ackonly_pass() {
  local impl=$1 label=$2 rep=$3 rate cmd
  start_impl "$impl"
  [ "$impl" = c-ingest ] || wait_assigned 4
  warmup "$impl"
  for rate in $RT_RATES; do
    cmd="${CHRT:+$CHRT }$LOADGEN --url ws://127.0.0.1:$PORT/ --mode ack --conns 10 --rate $rate --rows $((rate * RT_SECS)) --timeout 60"
    record "roundtrip-$rate" "$label" "$rep" "$($cmd 2>>"$(logfile loadgen)")" "" "$cmd"
  done
  stop_pid "$PID"
}
if want roundtrip; then
  fresh_kafka
  for rep in $(seq 1 "$REPEAT"); do
    for impl in $SLUICES c-ingest; do
      note "roundtrip: $impl, rep $rep"
      if [ "$impl" = c-ingest ]; then start_impl "$impl"; else start_impl "$impl" 1; wait_assigned 8; fi
      warmup "$impl"
      for rate in $RT_RATES; do
        sub="--sub ws://127.0.0.1:$PORT/echo"
        [ "$impl" = c-ingest ] && sub=
        cmd="$LOADGEN --url ws://127.0.0.1:$PORT/ --mode ack --conns 10 --rate $rate --rows $((rate * RT_SECS)) $sub --timeout 60"
        record "roundtrip-$rate" "$impl" "$rep" "$($cmd 2>>"$(logfile loadgen)")" "" "$cmd"
      done
      stop_pid "$PID"
      [ "$impl" = c-ingest ] && continue
      note "roundtrip: $impl without the echo consumer (ack only), rep $rep"
      ackonly_pass "$impl" "$impl-ackonly" "$rep"
    done
  done
  if [ "$FIFO" = 1 ]; then
    # The same ack-only pass with every process on the path (broker,
    # gateway, load generator) under SCHED_FIFO: a woken process runs at
    # once instead of waiting for a core the others hold.
    CHRT="chrt -f 1"
    fresh_kafka
    for rep in $(seq 1 "$REPEAT"); do
      for impl in $SLUICES c-ingest; do
        note "roundtrip: $impl under SCHED_FIFO (ack only), rep $rep"
        ackonly_pass "$impl" "$impl-fifo" "$rep"
      done
    done
    CHRT=
  fi
fi

# ---- connections: memory per idle WebSocket ----------------------------------
if want connections; then
  for impl in $SLUICES c-ingest node-careful; do
    note "connections: $impl, $IDLE_CONNS idle WebSockets"
    start_impl "$impl"
    sleep 1
    before=$(rss_kb "$PID")
    out=$OUT/logs/idle.json err=$(logfile idle-loadgen)
    cmd="$LOADGEN --url ws://127.0.0.1:$PORT/ --mode idle --conns $IDLE_CONNS --hold $IDLE_HOLD --timeout 120"
    $cmd >"$out" 2>"$err" &
    LG=$!
    for i in $(seq 1 1200); do grep -q "connections open" "$err" && break; sleep 0.1; done
    sleep "$IDLE_SETTLE"
    after=$(rss_kb "$PID")
    wait "$LG" || true
    stop_pid "$PID"
    record connections "$impl" 1 "$(cat "$out")" "\"rss_before_kb\":$before,\"rss_after_kb\":$after" "$cmd"
  done
fi

# ---- overload ------------------------------------------------------------------
if want overload; then
  for impl in ${IMPLS:-$SLUICES $PEERS}; do
    note "overload: $impl, ${OVERLOAD_S} s at full speed"
    fresh_kafka
    start_impl "$impl"
    warmup "$impl"
    mode="--mode ack"
    case "$impl" in node-*) mode="--mode send --kafka $KAFKA --topic ${PREFIX}movie-results" ;; esac
    samples=$OUT/logs/rss-$impl.txt
    : >"$samples"
    ( t0=$(date +%s.%N); while kill -0 "$PID" 2>/dev/null; do
        d=0; case "$impl" in sluice-*) d=$(http_get "$PORT" /healthz | sed -n 's/.*"delivered":\([0-9]*\).*/\1/p') ;; esac
        echo "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{print a - b}') $(rss_kb "$PID") ${d:-0}" >>"$samples"; sleep 1; done ) &
    SAMPLER=$!
    cmd="$LOADGEN --url ws://127.0.0.1:$PORT/ $mode --conns 10 --duration $OVERLOAD_S --timeout $((OVERLOAD_S + 60))"
    res=$($cmd 2>>"$(logfile loadgen)")
    hwm=$(hwm_kb "$PID")
    stop_pid "$PID"
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
    rss_series=$(awk 'BEGIN{printf "["} $2 > 0 {printf "%s[%.1f,%d,%d]", (n++ ? "," : ""), $1, $2, $3} END{printf "]"}' "$samples")
    record overload "$impl" 1 "$res" "\"peak_rss_kb\":$hwm,\"rss_series\":$rss_series" "$cmd"
  done
fi

# ---- idle CPU --------------------------------------------------------------------
if want idle; then
  fresh_kafka
  for impl in $SLUICES; do
    note "idle: $impl, ${IDLE_S} s"
    start_impl "$impl"
    sleep 2
    c0=$(cpu_ticks "$PID"); sleep "$IDLE_S"; c1=$(cpu_ticks "$PID")
    rss=$(rss_kb "$PID")
    stop_pid "$PID"
    cpu=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN{printf "%.3f", (b - a) / t}')
    record idle "$impl" 1 "{\"seconds\":$IDLE_S,\"cpu_s\":$cpu,\"rss_kb\":$rss}" "" "sleep $IDLE_S (CPU from /proc/PID/stat)"
  done
fi

[ -n "$BROKER_PID" ] && stop_pid "$BROKER_PID"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the broker, for the report --------------------------------------------------
if [ "$KAFKA_MODE" = apache ]; then
  # its version (the jar Maven fetched), the JVM's options (the running
  # process's own) and its whole configuration
  KAFKA_JSON=$(lua5.4 - "$KDIR" "$KAFKA" "$(java -version 2>&1 | head -1)" <<'LUA'
local cjson = require "cjson"
local dir, bootstrap, java = arg[1], arg[2], arg[3]
local version
for f in io.popen("ls " .. dir .. "/libs"):lines() do version = version or f:match "^kafka_2%.13%-(.+)%.jar$" end
local jvm = {}
local pid = io.open(dir .. "/node1/pid"):read "l"
for a in io.open("/proc/" .. pid .. "/cmdline", "rb"):read("a"):gmatch "[^\0]+" do
  if a:match "^%-X" then jvm[#jvm + 1] = a end
end
local config = {}
for l in io.lines(dir .. "/node1/server.properties") do
  if not l:match "^%s*#" and l:match "%S" then config[#config + 1] = l end
end
print(cjson.encode { broker = "apache", version = version, brokers = 1, bootstrap = bootstrap,
  java = java, jvm = table.concat(jvm, " "), config = config,
  topics = "fresh for every measurement: 4 partitions, replication factor 1" })
LUA
)
else
  KAFKA_JSON="{\"broker\":\"embedded\",\"command\":\"$BUILD/bin/sluice-lua5.4 run bench/apps/broker.lua --embedded-port PORT\"}"
fi

# ---- machine ---------------------------------------------------------------------
cat >"$OUT/machine.json" <<EOF
{"cpu":"$(lscpu | sed -n 's/^Model name: *//p' | head -1)","cores":$(nproc),
 "mem_mb":$(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo),"kernel":"$(uname -r)",
 "os":"$(. /etc/os-release && echo "$PRETTY_NAME")",
 "libwebsockets":"$(pkg-config --modversion libwebsockets)","librdkafka":"$(pkg-config --modversion rdkafka)",
 "luajit":"$(luajit -v 2>&1 | cut -d' ' -f1-2)","lua":"$(lua5.4 -v 2>&1 | cut -d' ' -f1-2)",
 "node":"$(node --version)","kafkajs":"$(node -p 'require(process.argv[1]).version' "$ROOT/bench/peers/node_modules/kafkajs/package.json")",
 "ws":"$(node -p 'require(process.argv[1]).version' "$ROOT/bench/peers/node_modules/ws/package.json")",
 "load_start":"$LOAD_START","load_end":"$LOAD_END","date":"$(date -u +%FT%TZ)",
 "duration_s":$(( $(date +%s) - T_START )),"smoke":$SMOKE,"repeat":$REPEAT,
 "command":"$COMMAND",
 "kafka":$KAFKA_JSON}
EOF

note "writing report"
lua5.4 "$ROOT/bench/report.lua" "$OUT" "$SMOKE"
