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
  return App.new(options, M.overrides, 2)
end

return M
