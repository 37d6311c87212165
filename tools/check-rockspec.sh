#!/usr/bin/env bash
# Installs sluice with `luarocks make --deps-mode=none` into a private tree
# for one Lua and checks that the module loads, the command runs on that Lua
# and an app starts. Usage: check-rockspec.sh SOURCE_DIR WORK_DIR LUA
# (LUA: lua5.1, lua5.4 or luajit).
set -euo pipefail
src=$1 work=$2 lua=${3:-lua5.4}
rm -rf "$work" && mkdir -p "$work/src"
case "$lua" in
  lua5.1) rocks=(luarocks --lua-version 5.1) want="(Lua 5.1)" ;;
  lua5.4) rocks=(luarocks --lua-version 5.4) want="(Lua 5.4" ;;
  luajit)
    # LuaRocks on Debian builds for PUC 5.1 by default: point it at LuaJIT's
    # headers and interpreter (the command's wrapper then runs luajit).
    cat >"$work/luarocks-luajit.lua" <<'CFG'
lua_version = "5.1"
lua_interpreter = "luajit"
variables = { LUA_DIR = "/usr", LUA_BINDIR = "/usr/bin",
              LUA_INCDIR = "/usr/include/luajit-2.1", LUA = "/usr/bin/luajit" }
CFG
    export LUAROCKS_CONFIG="$work/luarocks-luajit.lua"
    rocks=(luarocks --lua-version 5.1) want="LuaJIT" ;;
  *) echo "check-rockspec.sh: unknown Lua '$lua'" >&2; exit 2 ;;
esac
# A copy of the tracked sources: luarocks builds in place.
(cd "$src" && git ls-files -z 2>/dev/null || find . -type f -print0) | (cd "$src" && xargs -0 cp --parents -t "$work/src")
cd "$work/src"
"${rocks[@]}" make --deps-mode=none --tree "$work/tree" rockspec/sluice-scm-1.rockspec >"$work/luarocks.log" 2>&1 || { cat "$work/luarocks.log"; exit 1; }
eval "$("${rocks[@]}" path --tree "$work/tree")"
cd "$work"
version=$("$lua" -e 'print(require("sluice").version)')
[ "$version" = "0.1.0" ] || { echo "require 'sluice' gave version '$version'"; exit 1; }
out=$("$work/tree/bin/sluice" --version)
case "$out" in "sluice 0.1.0"*"$want"*) ;; *) echo "sluice --version printed '$out' (expected 'sluice 0.1.0 … $want')"; exit 1;; esac
# An app runs from the installed module: produce on the embedded broker.
"$lua" - <<'LUA'
local sluice = require "sluice"
local app = assert(sluice.app { listen = false, embedded = { port = 0 }, log = function() end }:start())
local got
assert(app:produce("rockspec-check", { key = "k", value = "v" }, function(err, r) got = err or r end))
for _ = 1, 100 do app:step(50); if got then break end end
app:close()
assert(type(got) == "table" and got.offset == 0, "no delivery report: " .. tostring(got))
print("installed sluice produced to " .. got.topic .. " at offset " .. got.offset)
-- Every C part is in the rockspec: a row schema checks and re-encodes.
local row = sluice.schema { { "n", "number", min = 0 }, { "s", "string" } }
assert(row:check(' { "s" : "a/b", "n" : 1e2 } ') == '{"n":100,"s":"a\\/b"}', "schema check")
-- Stream processing runs its steps on this Lua (5.1's xpcall passes no
-- arguments: a step that got none would fail every record).
local stream = require "sluice.stream"
local t = stream.topology(nil, { name = "rockspec" })
t:from("in"):count({ store = "n" }):to("out")
local d = stream.driver(t)
d:pipe("in", "k", "a"):pipe("in", "k", "b")
local out = d:read("out")
assert(#out == 2 and out[2].key == "k" and out[2].value == "2",
  "stream count: " .. #out .. " records, logs: " .. table.concat(d.logs, "; "))
LUA
# A second Lua into the same tree (LuaRocks shares its bin/): the last
# install owns bin/sluice, and --lua reaches every install (LuaJIT runs
# LuaRocks' 5.1 one).
if [ "$lua" = lua5.4 ]; then
  (cd "$work/src" && luarocks --lua-version 5.1 make --deps-mode=none --tree "$work/tree" \
     rockspec/sluice-scm-1.rockspec >>"$work/luarocks.log" 2>&1) || { cat "$work/luarocks.log"; exit 1; }
  for pair in ":(Lua 5.1)" "lua5.4:(Lua 5.4" "lua5.1:(Lua 5.1)" "luajit:LuaJIT"; do
    which=${pair%%:*} want=${pair#*:}
    out=$("$work/tree/bin/sluice" ${which:+--lua "$which"} --version)
    case "$out" in "sluice 0.1.0"*"$want"*) ;; *) echo "sluice ${which:+--lua $which }--version printed '$out' (expected '… $want')"; exit 1;; esac
  done
  out=$("$work/tree/bin/sluice" --lua lua5.3 --version 2>&1) && { echo "--lua lua5.3 succeeded"; exit 1; }
  [ "$out" = "sluice: --lua must be luajit, lua5.4 or lua5.1, got 'lua5.3'" ] || { echo "--lua lua5.3: '$out'"; exit 1; }
  echo "two Luas in one tree: bin/sluice on Lua 5.1 (the last install), --lua lua5.4, lua5.1 and luajit each run theirs"
fi
echo "1 passed, 0 failed ($lua)"
