#!/usr/bin/env bash
# Profiles one sluice gateway (the movies app, bench/apps/movies.lua) with
# perf while the load generator drives one scenario, and prints the hottest
# symbols (self time) of the gateway process, all threads.
#
#   bench/profile.sh [ingest|fanout|overload] [sluice-luajit|sluice-lua5.4] [BUILD]
#
# ingest:   10 connections, 200,000 rows at full speed, acknowledged
# fanout:   1,000 clients on /stats, 1,000 records produced to movie-stats
# overload: 10 connections at full speed for 8 s
# The perf data stays in /tmp/sluice-profile.*/perf.data for `perf report`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCEN=${1:-ingest} IMPL=${2:-sluice-luajit} BUILD=${3:-$ROOT/build-bench}
B=$BUILD/bench
DIR=$(mktemp -d /tmp/sluice-profile.XXXXXX)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
free_port() { lua5.4 -e 'local s=require"socket".bind("127.0.0.1",0); local _,p=s:getsockname(); print(p); s:close()'; }
http_get() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$2" >&3 &&
   tr -d '\r' <&3 | sed '1,/^$/d') 2>/dev/null || true
}
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

KPORT=$(free_port) PORT=$(free_port)
(cd "$ROOT" && exec "$BUILD/bin/sluice-lua5.4" run bench/apps/broker.lua --embedded-port "$KPORT") >"$DIR/broker.log" 2>&1 &
PIDS+=($!)
for i in $(seq 1 100); do kcat -b "127.0.0.1:$KPORT" -L -t movie-stats -m 2 2>/dev/null | grep -q "4 partitions" && break; sleep 0.2; done
(cd "$ROOT" && exec "$BUILD/bin/$IMPL" run bench/apps/movies.lua --listen "$PORT" --kafka "127.0.0.1:$KPORT" --log-level warn) >"$DIR/gateway.log" 2>&1 &
GW=$!; PIDS+=($GW)
for i in $(seq 1 100); do http_get "$PORT" /bench/ready | grep -q '"assigned":4' && break; sleep 0.1; done
"$B/sluice-loadgen" --url "ws://127.0.0.1:$PORT/" --conns 10 --rows 1000 >/dev/null 2>&1   # warm up

perf record -F 999 -g -o "$DIR/perf.data" -p "$GW" 2>"$DIR/perf.log" &
PERF=$!
sleep 0.5
case "$SCEN" in
  ingest) "$B/sluice-loadgen" --url "ws://127.0.0.1:$PORT/" --conns 10 --rows 200000 2>/dev/null ;;
  overload) "$B/sluice-loadgen" --url "ws://127.0.0.1:$PORT/" --conns 10 --duration 8 2>/dev/null | sed 's/,"timeline".*/}/' ;;
  fanout)
    "$B/sluice-loadgen" --url "ws://127.0.0.1:$PORT/stats" --mode recv --conns 1000 --expect 1000 >"$DIR/fan.json" 2>"$DIR/fan.err" &
    LG=$!
    for i in $(seq 1 300); do grep -q "connections open" "$DIR/fan.err" && break; sleep 0.1; done
    sleep 0.5
    "$B/sluice-kprod" --kafka "127.0.0.1:$KPORT" --topic movie-stats --rows 1000 --stamp >/dev/null
    wait "$LG"; cat "$DIR/fan.json" ;;
  *) echo "profile.sh: unknown scenario $SCEN" >&2; exit 2 ;;
esac
kill -INT "$PERF"; wait "$PERF" 2>/dev/null || true
echo "== $IMPL $SCEN: hottest symbols (self), all threads; data in $DIR/perf.data"
perf report -i "$DIR/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -30
echo "== by thread"
perf report -i "$DIR/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -10
