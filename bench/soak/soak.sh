#!/bin/sh
# The soak: mixed load with periodic broker faults and hot reloads for a
# chosen time; reports losses (must be zero), memory growth and ack
# latency percentiles over time. Exit 0 only if nothing was lost.
#
#   bench/soak/soak.sh [--duration 60] [--rate 1000] [--connections 4]
#                      [--batch 1] [--fault-every 15] [--report 10] [--app PATH]
#
# Builds nothing: uses $SLUICE_BUILD_DIR (default build/, as ./test.sh
# makes it). Needs node (with spec/clients' node_modules) and kcat.
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SLUICE_BUILD_DIR:-$root/build}
case $build in /*) ;; *) build=$root/$build ;; esac
[ -x "$build/bin/sluice-lua5.4" ] || { echo "soak: $build/bin/sluice-lua5.4 not found: build first (./test.sh or cmake)" >&2; exit 2; }
[ -d "$root/spec/clients/node_modules/ws" ] || (cd "$root/spec/clients" && npm ci --silent)
export LUA_PATH="$root/scripts/?.lua;$root/scripts/?/init.lua;$root/spec/?.lua;;"
export LUA_CPATH="$build/lua/lua5.4/?.so;;"
export SLUICE_BIN="$build/bin/sluice-lua5.4" SLUICE_ROOT="$root" SLUICE_CLIENTS="$root/spec/clients"
exec lua5.4 "$root/bench/soak/soak.lua" "$@"
