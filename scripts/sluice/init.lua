-- sluice: a WebSocket ↔ Kafka gateway scripted in Lua.
--
--   local sluice = require "sluice"
--   local app = sluice.app { listen = 8080 }
--
-- See docs/api.md for the whole API.
local core = require "sluice.core"
local App = require "sluice.app"
local reload = require "sluice.reload"

local M = {
  version = core.version,
  -- Settings the `sluice` command imposes on every app it runs
  -- (--listen, --kafka, --embedded-port); nil fields change nothing.
  overrides = {},
}

function M.app(options)
  -- Not a tail call: App.new looks two frames up for the app file's path.
  local app = App.new(options, M.overrides, 2)
  return app
end

-- A row schema: JSON text checked, validated and re-encoded in C, one
-- call per row (docs/api.md, "Row schemas").
M.schema = core.schema

-- JSON Web Tokens verified in C: sluice.jwt.keys, verify, sign, token
-- (docs/api.md, "JWT").
M.jwt = require "sluice.jwt"

-- A Kafka admin client (topics and their configs) on an app's cluster
-- or on { kafka = { ["bootstrap.servers"] = … } } (docs/api.md, "sluice.admin").
function M.admin(target)
  return require("sluice.admin").new(target)
end

-- Loads an app file (which returns its app) so that it can be reloaded:
-- app:reload(), app:watch(), SIGHUP under app:run(). Returns the app, or
-- nil, "LOAD: file:line: message", "LOAD".
function M.load(path)
  return reload.load_app(path, M)
end

return M
