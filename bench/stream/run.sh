#!/bin/sh
# Runs the sluice.stream benchmark on Lua 5.4 and LuaJIT from a build tree.
#   bench/stream/run.sh [N] [BUILD_DIR]
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-200000}
build=${2:-$root/build}
for lua in lua5.4 luajit; do
  [ -f "$build/lua/$lua/sluice/core.so" ] || [ -f "$build/lua/$lua/core.so" ] || ls "$build/lua/$lua" >/dev/null 2>&1 || continue
  for mode in driver kafka; do
    LUA_PATH="$root/scripts/?.lua;$root/scripts/?/init.lua;;" \
    LUA_CPATH="$build/lua/$lua/?.so;;" \
      $lua "$root/bench/stream/windowed_count.lua" "$n" "$mode"
  done
done
