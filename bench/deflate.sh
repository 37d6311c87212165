#!/usr/bin/env bash
# permessage-deflate, with and without: the movies app (deflate = true) on
# its embedded broker, clients from sluice-loadgen, which offers the
# extension with --deflate (it counts frames and bytes, it does not
# inflate). Per mode:
#   fan-out  — CONNS clients on /stats, RECORDS stamped records shaped like movie-stats windows (sluice-kprod --stats, ~450 bytes):
#              deliveries/s and bytes read by the clients (handshakes included);
#   idle     — CONNS connections held open: the gateway's RSS growth per connection.
# Prints one JSON line per measurement.
#   bench/deflate.sh [--build DIR] [--conns N] [--records N]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build CONNS=1000 RECORDS=1000
while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --records) RECORDS=$2; shift ;;
    *) echo "usage: bench/deflate.sh [--build DIR] [--conns N] [--records N]" >&2; exit 2 ;;
  esac
  shift
done
B=$BUILD/bench
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
GW=
trap '[ -n "$GW" ] && kill "$GW" 2>/dev/null || true' EXIT

start_gw() {
  PORT=$(free_port) KPORT=$(free_port)
  (cd "$ROOT" && exec "$BUILD/bin/sluice" run bench/apps/movies.lua --listen "$PORT" \
     --embedded-port "$KPORT" --log-level warn) >/dev/null 2>&1 &
  GW=$!
  for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:$PORT/bench/ready" | grep -q '"assigned":4' && return 0
    sleep 0.1
  done
  echo "deflate.sh: the gateway did not get its partitions" >&2; exit 1
}
stop_gw() { kill "$GW"; wait "$GW" 2>/dev/null || true; GW=; }

for mode in plain deflate; do
  flag=; [ "$mode" = deflate ] && flag=--deflate
  start_gw
  err=$(mktemp)
  "$B/sluice-loadgen" --url "ws://127.0.0.1:$PORT/stats" --mode recv --conns "$CONNS" \
    --expect "$RECORDS" --timeout 120 $flag >"$err.out" 2>"$err" &
  LG=$!
  for _ in $(seq 1 600); do grep -q "connections open" "$err" && break; sleep 0.1; done
  sleep 0.5
  "$B/sluice-kprod" --kafka "127.0.0.1:$KPORT" --topic movie-stats --rows "$RECORDS" --stats >/dev/null 2>&1
  wait "$LG" || true
  echo "{\"scenario\":\"fanout\",\"mode\":\"$mode\",\"peak_rss_kb\":$(awk '/VmHWM/ { print $2 }' "/proc/$GW/status"),\"result\":$(cat "$err.out")}"
  stop_gw

  start_gw
  sleep 1
  before=$(rss_kb "$GW")
  "$B/sluice-loadgen" --url "ws://127.0.0.1:$PORT/stats" --mode idle --conns "$CONNS" --hold 4 $flag >"$err.out" 2>"$err" &
  LG=$!
  for _ in $(seq 1 600); do grep -q "connections open" "$err" && break; sleep 0.1; done
  sleep 2
  during=$(rss_kb "$GW")
  wait "$LG" || true
  echo "{\"scenario\":\"idle\",\"mode\":\"$mode\",\"conns\":$CONNS,\"rss_before_kb\":$before,\"rss_kb\":$during,\"kb_per_conn\":$(awk -v a="$before" -v b="$during" -v n="$CONNS" 'BEGIN { printf "%.2f", (b - a) / n }')}"
  stop_gw
  rm -f "$err" "$err.out"
done
