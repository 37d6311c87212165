-- The options of sluice.app{}: their types and values, checked at once
-- (docs/api.md). level: where errors point, as for error().
local metrics = require "sluice.metrics"

local M = {}

local LEVELS = { error = true, warn = true, info = true, debug = true }

local OPTION_TYPES = {
  name = "string", listen = "listen", static = "string", kafka = "table",
  embedded = "table", max_message = "number", max_body = "number",
  idle_timeout = "idle", send_queue = "number", max_connections = "number",
  max_connections_per_address = "number",
  log = "function", log_level = "string",
  handler_timeout = "idle", handler_instructions = "number",
  handshake_timeout = "idle", max_pending = "number", max_in_flight = "number",
  metrics = "metrics", catchups = "number", deflate = "boolean", tls = "tls", console = "console",
}

local TLS_KEYS = { cert = true, key = true, ca = true }

-- tls = { cert = FILE, key = FILE [, ca = FILE] }: nil, or what is wrong.
local function tls_error(t)
  if type(t) ~= "table" then return ("option 'tls' must be a table, got %s"):format(type(t)) end
  for k, v in pairs(t) do
    if not TLS_KEYS[k] then return ("unknown key '%s' in option 'tls' (known: ca, cert, key)"):format(tostring(k)) end
    if type(v) ~= "string" then return ("tls.%s must be a file name, got %s"):format(k, type(v)) end
  end
  if not t.cert or not t.key then return "option 'tls' needs both cert and key (PEM files)" end
end

function M.check(options, level)
  for k, v in pairs(options) do
    local want = OPTION_TYPES[k]
    if not want then
      error(("bad argument #1 to 'app' (unknown option '%s')"):format(tostring(k)), level + 1)
    end
    local ok
    if want == "listen" then ok = v == false or type(v) == "number" or type(v) == "string"
    elseif want == "idle" then ok = v == false or type(v) == "number"
    elseif want == "tls" then
      local bad = tls_error(v)
      if bad then error(("bad argument #1 to 'app' (%s)"):format(bad), level + 1) end
      ok = true
    elseif want == "console" then ok = type(v) == "boolean" or type(v) == "string"
    elseif want == "metrics" then
      local _, bad = metrics.config(v)
      if bad then error(("bad argument #1 to 'app' (%s)"):format(bad), level + 1) end
      ok = true
    else ok = type(v) == want end
    if not ok then
      error(("bad argument #1 to 'app' (option '%s' must be %s, got %s)")
        :format(k, want == "listen" and "a port, \"host:port\" or false"
                   or want == "idle" and "a number of seconds or false"
                   or want == "console" and "true, false or a socket path" or want,
                type(v)), level + 1)
    end
  end
  if options.log_level and not LEVELS[options.log_level] then
    error("bad argument #1 to 'app' (log_level must be error, warn, info or debug)", level + 1)
  end
  local m = options.max_in_flight
  if m ~= nil and (m < 1 or m ~= math.floor(m)) then
    error("bad argument #1 to 'app' (max_in_flight must be a whole number of records, at least 1)", level + 1)
  end
end

return M
