-- HTTP requests of an app: the request object its handlers get, and how
-- their (status, body, headers) answer becomes the response.
local util = require "sluice.util"
local ops = require "sluice.ops"
local door = require "sluice.app.door"
local cjson = require "cjson"

local json = cjson.new()
json.encode_sparse_array(true)

local M = {}

-- Served by every app (unless it declares the route itself): app:health().
M.HEALTH_PATH = "/_sluice/health"

-- The body as text, and the content type it implies (a table: JSON).
local function encode_body(body)
  if type(body) == "table" then return json.encode(body), "application/json" end
  if body == nil then return "", nil end
  return tostring(body), nil
end

local function split_headers(headers)
  -- content-type travels separately; the rest as a name → value table.
  if not headers then return nil, nil end
  local rest, ctype = {}, nil
  for k, v in pairs(headers) do
    if type(k) == "string" and k:lower() == "content-type" then ctype = tostring(v)
    else rest[k] = tostring(v) end
  end
  return ctype, rest
end

local REASONS = { [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [429] = "Too Many Requests" }
local function http_reason(status) return REASONS[status] or ("HTTP " .. status) end

local function respond(raw, status, body, headers)
  local text, default_ctype = encode_body(body)
  local ctype, rest = split_headers(headers)
  return raw:respond(status or 200, ctype or default_ctype or "text/plain; charset=utf-8", text, rest)
end

local Request = {}
Request.__index = Request

function Request:json()
  local ok, value = pcall(json.decode, self.body)
  if not ok then
    local msg = tostring(value):gsub("^.-:%d+: ", "")
    return nil, "BAD_JSON: " .. msg, "BAD_JSON"
  end
  return value
end

-- From the handler: a function that answers later. From the route's
-- auth: a function that takes auth's answer later (true [, claims], or
-- status, reason [, headers]), then runs the handler.
function Request:defer()
  self._deferred = true
  local raw = self._raw
  local admitting = self._admitting
  if admitting then
    -- called later from another handler (a timer, a delivery report): a
    -- failure there still answers this request
    return function(...)
      local ok, err = pcall(admitting, ...)
      if not ok then
        if raw:is_pending() then
          raw:respond(500, "application/json", '{"error":"handler failed","code":"HANDLER"}')
        end
        error(err, 0)
      end
    end
  end
  return function(status, body, headers) return respond(raw, status, body, headers) end
end

local unpack = table.unpack or unpack
local function pack(...) return { n = select("#", ...), ... } end

local function refuse(raw, status, why, headers)
  return respond(raw, status, { status = status, error = why or http_reason(status) }, headers)
end

local function run(handler, req)
  local status, body, headers = handler(req)
  if req._deferred then return end
  if status == nil and body == nil then status = 204 end
  respond(req._raw, status, body, headers)
end

-- Whether app serves method path (its routes, the health route, or an
-- operator endpoint).
function M.matches(app, method, path)
  local routes = app.http_routes
  return routes[method .. " " .. path] ~= nil or routes["* " .. path] ~= nil
    or (method == "GET" and (path == M.HEALTH_PATH or ops.route(app, path) ~= nil))
end

-- Runs app's handler for the core request raw (a sluice.http.req).
function M.serve(app, raw)
  local key = raw.method .. " " .. raw.path
  if not app.http_routes[key] then key = "* " .. raw.path end
  local handler = app.http_routes[key]
  if not handler and raw.path == M.HEALTH_PATH then
    handler = function() return 200, app:health() end
  end
  -- /metrics, /healthz/live, /healthz/ready (sluice.ops)
  local op = not handler and ops.route(app, raw.path)
  if op then
    local status, body, ctype = op()
    return raw:respond(status, ctype, body)
  end
  local req = setmetatable({
    _raw = raw, method = raw.method, path = raw.path, query_string = raw.query_string,
    query = util.decode_query(raw.query_string), headers = raw.headers, body = raw.body,
    peer = raw.peer,
  }, Request)
  local d = app.doors["http " .. key]
  local refused, why = door.screen(d, req)
  if refused then return refuse(raw, refused, why) end
  if not (d and d.auth) then return run(handler, req) end
  -- auth answers now, or later through req:defer()
  req._admitting = function(...)
    req._deferred = nil
    local allowed, claims, reason, headers = door.answer(...)
    if not allowed then return refuse(raw, claims, reason, headers) end
    req.auth = claims
    return run(handler, req)
  end
  local answer = pack(d.auth(req))
  local admit = req._admitting
  req._admitting = nil
  if req._deferred then return end
  admit(unpack(answer, 1, answer.n))
end

return M
