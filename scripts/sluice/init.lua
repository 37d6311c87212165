-- sluice: a WebSocket ↔ Kafka gateway scripted in Lua.
--
--   local sluice = require "sluice"
--   local app = sluice.app { listen = 8080 }
--
-- See docs/api.md for the whole API.
local core = require "sluice.core"
local App = require "sluice.app"

local M = {
  version = core.version,
  -- Settings the `sluice` command imposes on every app it runs
  -- (--listen, --kafka, --embedded-port); nil fields change nothing.
  overrides = {},
}

function M.app(options)
  -- Not a tail call: App.new looks two frames up for the app file's path.
  -- While a hot reload loads new code (M._loading, set by sluice.reload),
  -- the app is a candidate beside the running one.
  local loading = M._loading
  local app = App.new(options, M.overrides, 2, loading and loading.running)
  if loading then loading.apps[#loading.apps + 1] = app end
  return app
end

-- A row schema: JSON text checked, validated and re-encoded in C, one
-- call per row (docs/api.md, "Row schemas").
M.schema = core.schema

-- Loads an app file (which returns its app) so that it can be reloaded:
-- app:reload(), app:watch(), SIGHUP under app:run(). Returns the app, or
-- nil, "LOAD: file:line: message", "LOAD".
function M.load(path)
  return require("sluice.reload").load_app(path)
end

return M
