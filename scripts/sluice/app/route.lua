-- Declared routes: app:ws(path, { route = {...}, message = ... }).
--
-- The declaration is compiled once (a core route: schema, topic, key and
-- ack fields) and handed to the server, which runs every text message of
-- the path through it in C: a valid row (or an array of them) is produced
-- and acknowledged without entering Lua; anything else goes to the
-- `message` handler, or, when there is none, to the default below.
-- docs/api.md, "Declared routes".
local core = require "sluice.core"
local util = require "sluice.util"
local cjson = require "cjson"

local M = {}

local KEYS = { schema = true, topic = true, key = true, ack = true, arrays = true,
  dlq = true, transform = true }

local function bad(level, msg)
  error(("bad argument #2 to 'ws' (route: %s)"):format(msg), level + 1)
end

-- What the default handler sends for a message the route refused:
-- {"error": reason, "id": its row number}, the raw message to `dlq` with
-- header `error` = the reason.
local function refuse_default(app, decl)
  return function(conn, data, binary)
    local reason
    if binary then
      reason = "BINARY: binary messages are not taken by this route"
    else
      local _, err = decl.route:parse(data)
      reason = err
    end
    local n = conn:next_row()
    if not n then return end   -- closed meanwhile
    conn:send(('{"error":%s,"id":%d}'):format(cjson.encode(reason), n))
    if decl.dlq then
      local ok, err = app:produce(decl.dlq, { value = data, headers = { error = reason } })
      if not ok then app:_log("warn", ("dead-letter produce to %s refused: %s"):format(decl.dlq, err)) end
    end
  end
end

-- spec: the user's `route` table. Returns { route, transform, dlq, refuse }.
-- Raises (at the user's line, `level`) on a bad declaration.
function M.compile(app, spec, has_message, level)
  level = level + 1
  if type(spec) ~= "table" then bad(level, "a table expected, got " .. type(spec)) end
  for k in pairs(spec) do
    if not KEYS[k] then bad(level, ("unknown field '%s'"):format(tostring(k))) end
  end
  local schema = spec.schema
  if type(schema) == "table" then
    local ok, s = pcall(core.schema, schema)
    if not ok then bad(level, tostring(s):gsub("^[^:]*:%d+: ", "")) end
    schema = s
  elseif type(schema) ~= "userdata" then
    bad(level, "schema must be a field list or a sluice.schema")
  end
  if type(spec.topic) ~= "string" or spec.topic == "" then bad(level, "topic must be a non-empty string") end
  for _, k in ipairs({ "key", "ack", "dlq" }) do
    if spec[k] ~= nil and type(spec[k]) ~= "string" then bad(level, k .. " must be a string") end
  end
  if spec.transform ~= nil and type(spec.transform) ~= "function" then bad(level, "transform must be a function") end
  if spec.arrays ~= nil and type(spec.arrays) ~= "boolean" then bad(level, "arrays must be a boolean") end
  local ok, route = pcall(core.route, schema, {
    topic = spec.topic, key = spec.key, ack = spec.ack, arrays = spec.arrays ~= false,
  })
  if not ok then bad(level, tostring(route):gsub("^[^:]*:%d+: ", ""):gsub("^route: ", "")) end
  local decl = { route = route, transform = spec.transform, dlq = spec.dlq }
  if not has_message then decl.refuse = refuse_default(app, decl) end
  return decl
end

-- Hands the app's declarations to its server (from the next message on)
-- and takes back the ones no longer declared. A declared route needs the
-- producer: it is made now if it is not there yet.
function M.declare_all(app)
  local server = app.server
  if not server then return true end
  local declared, producer = app._declared, nil
  for path, decl in pairs(declared) do
    if not producer then
      local err
      producer, err = app:_producer()
      if not producer then
        app:_log("error", ("declared route %s: no producer: %s"):format(path, err))
        return nil, err
      end
    end
    server:declare(path, decl.route, producer, decl.transform)
  end
  for path in pairs(app._on_server or {}) do
    if not declared[path] then server:declare(path) end
  end
  app._on_server = util.copy(declared)
  return true
end

return M
