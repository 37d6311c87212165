#!/usr/bin/env bash
# Push latency: Kafka -> browser. One Apache Kafka broker (tools/kafka.sh),
# records stamped with their produce time (sluice-kprod), pushed to N
# WebSocket clients (sluice-loadgen recv) by sluice (LuaJIT and Lua 5.4,
# bench/apps/push.lua) and by Centrifugo (its Kafka consumer), beside the
# floor: a bare librdkafka consumer of the same topic (sluice-kfloor),
# timed the same way. Every case has a fresh topic (4 partitions).
#
#   bench/push/run.sh [--quick] [--build DIR] [--out DIR] [--impls LIST]
#                     [--clients LIST] [--rates LIST] [--seconds S] [--base DIR]
#
# --quick      200 clients, 100 and 1,000 records/s, 1 s each (~1 minute)
# --build DIR  build tree (default build-bench, configured Release if absent)
# --out DIR    results (default bench/results/push): push.jsonl, push.md, logs/
# --impls LIST floor,sluice-luajit,sluice-lua5.4,centrifugo,
#              sluice-luajit-batched (default: all; the last is sluice with
#              fetches batched for throughput, first client count only)
# --clients L  WebSocket clients per case (default "1000 10000")
# --rates L    records/s produced (default "100 200 1000 10000"); each case
#              produces for --seconds (default 3) but at most 2,000,000
#              deliveries' worth of records (rate x seconds x clients), so
#              that the cases this machine cannot keep up with stay short.
#              A burst case (1,000 records at once to the first client
#              count) follows.
# --base DIR   also measure another build of sluice (e.g. the commit before a
#              change, built Release in DIR) as base-luajit / base-lua5.4,
#              case by case beside this one (same app file, same broker;
#              which of the two runs first alternates from case to case)
# --repeat N   run every case N times (default 1), in N whole rounds, so a
#              minute of bad luck on a shared machine hits one repetition
#              of every case rather than every repetition of one; the table
#              gives medians and each round's p99
# Centrifugo v6.9.1 is built once with `go install` (GOBIN under the build
# tree; Go's module cache as usual); without Go or the module proxy it is
# skipped with a message.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build-bench
OUT=
IMPLS="floor sluice-luajit sluice-lua5.4 centrifugo sluice-luajit-batched"
# The throughput choice (docs/operations.md): fetches wait up to 50 ms for
# up to 1 MB, so each wake-up brings more records and each client gets them
# in fewer writes. Measured with the first client count only.
BATCHED="-X fetch.wait.max.ms=50 -X fetch.min.bytes=1048576"
CLIENTS="1000 10000"
RATES="100 200 1000 10000"
SECS=3
BURST=1000
MAX_DELIVERIES=2000000
CENTRIFUGO_VERSION=v6.9.1
BASE=
REPEAT=1
ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) CLIENTS="200"; RATES="100 1000"; SECS=1; BURST=200 ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --impls) IMPLS=${2//,/ }; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --base) BASE=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "push/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$ROOT/bench/results/push}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
if [ -n "$BASE" ]; then
  case $BASE in /*) ;; *) BASE=$PWD/$BASE ;; esac
  # each measured sluice gets its base right after it
  IMPLS=$(for i in $IMPLS; do
    echo "$i"
    case $i in sluice-luajit|sluice-lua5.4) [ -x "$BASE/bin/$i" ] && echo "base-${i#sluice-}" ;; esac
  done | tr '\n' ' ')
fi
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
COMMAND="bench/push/run.sh${ARGS:+ $ARGS}"
cd "$ROOT"

# ---- build ------------------------------------------------------------------
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j2 >/dev/null
B=$BUILD/bench
for t in sluice-loadgen sluice-kprod sluice-kfloor; do
  [ -x "$B/$t" ] || { echo "push/run.sh: $B/$t missing" >&2; exit 1; }
done
mkdir -p "$OUT/logs"
rm -f "$OUT"/logs/*
RAW=$OUT/push.jsonl
: >"$RAW"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
note() { echo "push: $*" >&2; }

CENTRIFUGO=
if [[ " $IMPLS " == *" centrifugo "* ]]; then
  GO=$(command -v go || echo /usr/local/go/bin/go)
  GOBIN_DIR=$BUILD/push-go/$CENTRIFUGO_VERSION
  if [ -x "$GOBIN_DIR/centrifugo" ]; then
    CENTRIFUGO=$GOBIN_DIR/centrifugo
  elif [ -x "$GO" ]; then
    note "building Centrifugo $CENTRIFUGO_VERSION (go install; a few minutes the first time)"
    if GOBIN=$GOBIN_DIR "$GO" install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION" \
         >"$OUT/logs/centrifugo-build.log" 2>&1; then
      CENTRIFUGO=$GOBIN_DIR/centrifugo
    else
      note "Centrifugo skipped: go install failed (see $OUT/logs/centrifugo-build.log)"
    fi
  else
    note "Centrifugo skipped: no Go toolchain (go not on PATH nor at /usr/local/go/bin/go)"
  fi
  [ -n "$CENTRIFUGO" ] || IMPLS=${IMPLS/centrifugo/}
fi

# ---- processes --------------------------------------------------------------
PIDS=()
KDIR=$BUILD/push-kafka
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tools/kafka.sh stop --dir "$KDIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"   # stop_pid, free_port, http_get, rss_kb
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
load1() { cut -d' ' -f1 /proc/loadavg; }
TICK=$(getconf CLK_TCK)

note "starting Apache Kafka (tools/kafka.sh, $KDIR)"
KAFKA=$(tools/kafka.sh start --dir "$KDIR" | tail -1)
LOAD_START=$(load1)
T_START=$(date +%s)
N=0
ROUND=1

# record IMPL CLIENTS RATE RECORDS JSON EXTRA
record() {
  echo "{\"impl\":\"$1\",\"clients\":$2,\"rate\":$3,\"records\":$4,\"round\":$ROUND,\"load1\":$(load1),$6,\"result\":${5:-null}}" >>"$RAW"
}

# One case: a fresh topic, the gateway, clients, records, the report.
gateway_case() {   # IMPL CLIENTS RATE RECORDS
  local impl=$1 clients=$2 rate=$3 records=$4 port topic pid url hello=() log
  N=$((N + 1))
  topic=push-$N-$impl
  port=$(free_port)
  log=$OUT/logs/$N-$impl-$clients-$rate
  "$B/sluice-kfloor" --kafka "$KAFKA" --topic "$topic" --create 4
  local pcmd=("$B/sluice-kprod" --kafka "$KAFKA" --topic "$topic" --rows "$records" --rate "$rate" --warmup 1)
  case $impl in
    sluice-*|base-*)
      local bin=$impl extra=() bdir=$BUILD
      [ "$impl" = sluice-luajit-batched ] && { bin=sluice-luajit; read -ra extra <<<"$BATCHED"; }
      case $impl in base-*) bin=sluice-${impl#base-}; bdir=$BASE ;; esac
      SLUICE_PUSH_TOPIC=$topic "$bdir/bin/$bin" run bench/apps/push.lua --listen "$port" --kafka "$KAFKA" \
        --log-level error "${extra[@]}" >"$log.gateway.log" 2>&1 &
      pid=$!
      for i in $(seq 1 300); do http_get "$port" /bench/ready | grep -q '"assigned":4' && break; sleep 0.1; done
      url=ws://127.0.0.1:$port/push
      pcmd+=(--stamp) ;;
    centrifugo)
      cat >"$log.centrifugo.json" <<JSON
{"http_server": {"address": "127.0.0.1", "port": $port}, "client": {"insecure": true}, "log": {"level": "error"},
 "consumers": [{"name": "push", "enabled": true, "type": "kafka",
   "kafka": {"brokers": ["$KAFKA"], "topics": ["$topic"], "consumer_group": "$topic"}}]}
JSON
      "$CENTRIFUGO" --config "$log.centrifugo.json" >"$log.gateway.log" 2>&1 &
      pid=$!
      "$B/sluice-kfloor" --kafka "$KAFKA" --wait-group "$topic" --timeout 60
      url=ws://127.0.0.1:$port/connection/websocket
      hello=(--hello $'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"push"}}')
      pcmd+=(--centrifugo push) ;;
  esac
  PIDS+=("$pid")
  local rss0 c0 c1 rss1
  rss0=$(rss_kb "$pid")
  "$B/sluice-loadgen" --url "$url" --mode recv --conns "$clients" --expect "$records" --timeout 90 \
    "${hello[@]}" >"$log.json" 2>"$log.loadgen.log" &
  local lg=$!
  for i in $(seq 1 900); do grep -qs "connections open" "$log.loadgen.log" && break; sleep 0.1; done
  sleep 1
  rss1=$(rss_kb "$pid")
  c0=$(cpu_ticks "$pid")
  "${pcmd[@]}" >"$log.kprod.json" 2>>"$log.kprod.log"
  wait "$lg" || true
  c1=$(cpu_ticks "$pid")
  stop_pid "$pid"
  record "$impl" "$clients" "$rate" "$records" "$(cat "$log.json")" \
    "\"cpu_s\":$(awk -v a="$c0" -v b="$c1" -v t="$TICK" 'BEGIN{printf "%.2f", (b-a)/t}'),\"rss_kb_before\":$rss0,\"rss_kb_clients\":$rss1,\"command\":\"${pcmd[*]}\""
}

floor_case() {   # RATE RECORDS
  local rate=$1 records=$2 topic log
  N=$((N + 1))
  topic=push-$N-floor
  log=$OUT/logs/$N-floor-$rate
  "$B/sluice-kfloor" --kafka "$KAFKA" --topic "$topic" --create 4
  rm -f "$log.ready"
  "$B/sluice-kfloor" --kafka "$KAFKA" --topic "$topic" --expect "$records" --wake eventfd \
    --ready-file "$log.ready" --timeout 90 >"$log.json" 2>"$log.log" &
  local fp=$!
  for i in $(seq 1 300); do [ -e "$log.ready" ] && break; sleep 0.1; done
  "$B/sluice-kprod" --kafka "$KAFKA" --topic "$topic" --rows "$records" --rate "$rate" --warmup 1 --stamp \
    >"$log.kprod.json" 2>>"$log.kprod.log"
  wait "$fp" || true
  record floor 1 "$rate" "$records" "$(cat "$log.json")" "\"command\":\"sluice-kfloor --wake eventfd\""
}

# The implementations of one row group; with --base, every other group
# runs each base before its build (the first of a pair tends to fare worse).
PAIR_FLIP=1
impls_for_group() {
  if [ -z "$BASE" ] || [ "$PAIR_FLIP" = 0 ]; then echo "$IMPLS"; return; fi
  echo "$IMPLS" | awk '{ for (i = 1; i <= NF; i++) if ($(i+1) ~ /^base-/) { printf "%s %s ", $(i+1), $i; i++ } else printf "%s ", $i }'
}

records_for() {   # RATE CLIENTS -> records
  awk -v r="$1" -v s="$SECS" -v c="$2" -v m="$MAX_DELIVERIES" \
    'BEGIN{n=r*s; if (n*c > m) n=int(m/c); if (n<1) n=1; print n}'
}

for ROUND in $(seq 1 "$REPEAT"); do
  RP=; [ "$REPEAT" -gt 1 ] && RP="round $ROUND of $REPEAT: "
  for rate in $RATES; do
    if [[ " $IMPLS " == *" floor "* ]]; then
      note "${RP}floor, $rate records/s"
      floor_case "$rate" "$(records_for "$rate" 1)"
    fi
    for clients in $CLIENTS; do
      PAIR_FLIP=$((1 - PAIR_FLIP))
      for impl in $(impls_for_group); do
        [ "$impl" = floor ] && continue
        [ "$impl" = sluice-luajit-batched ] && [ "$clients" != "${CLIENTS%% *}" ] && continue
        note "$RP$impl, $clients clients, $rate records/s"
        gateway_case "$impl" "$clients" "$rate" "$(records_for "$rate" "$clients")"
      done
    done
  done
  first_clients=${CLIENTS%% *}
  PAIR_FLIP=$((1 - PAIR_FLIP))
  for impl in $(impls_for_group); do
    [ "$impl" = floor ] && continue
    note "$RP$impl, burst: $BURST records at once to $first_clients clients"
    gateway_case "$impl" "$first_clients" 0 "$BURST"
  done
done

lua5.4 bench/push/report.lua "$RAW" "$COMMAND" "$LOAD_START" "$(load1)" "$(( $(date +%s) - T_START ))" >"$OUT/push.md"
cat "$OUT/push.md"
