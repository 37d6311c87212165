#!/usr/bin/env bash
# Installs sluice with `luarocks make --deps-mode=none` (Lua 5.4) into a
# private tree and checks that the module loads, the command runs and an
# app starts. Usage: check-rockspec.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work/src"
# A copy of the tracked sources: luarocks builds in place.
(cd "$src" && git ls-files -z 2>/dev/null || find . -type f -print0) | (cd "$src" && xargs -0 cp --parents -t "$work/src")
cd "$work/src"
luarocks --lua-version 5.4 make --deps-mode=none --tree "$work/tree" rockspec/sluice-scm-1.rockspec >"$work/luarocks.log" 2>&1 || { cat "$work/luarocks.log"; exit 1; }
eval "$(luarocks --lua-version 5.4 path --tree "$work/tree")"
cd "$work"
version=$(lua5.4 -e 'print(require("sluice").version)')
[ "$version" = "0.1.0" ] || { echo "require 'sluice' gave version '$version'"; exit 1; }
out=$("$work/tree/bin/sluice" --version)
case "$out" in "sluice 0.1.0"*) ;; *) echo "sluice --version printed '$out'"; exit 1;; esac
# An app runs from the installed module: produce on the embedded broker.
lua5.4 - <<'LUA'
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
LUA
echo "1 passed, 0 failed"
