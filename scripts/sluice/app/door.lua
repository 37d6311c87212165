-- The door of a route: what is decided about a request before it is served
-- (before the 101 of a WebSocket, before the handler of an HTTP route):
-- its Origin, its subprotocol and the route's auth hook. docs/security.md.
local M = {}

-- RFC 7230 token characters: what Sec-WebSocket-Protocol names are.
local TOKEN = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

local function fail(fname, msg, level)
  error(("bad argument #2 to '%s' (%s)"):format(fname, msg), level + 1)
end

local function string_list(v, key, fname, level)
  if type(v) ~= "table" or #v == 0 then
    fail(fname, ("'%s' must be a non-empty list of strings, got %s"):format(key, type(v)), level + 1)
  end
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > #v or k % 1 ~= 0 then
      fail(fname, ("'%s' must be a list (found key %s)"):format(key, tostring(k)), level + 1)
    end
  end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then
      fail(fname, ("'%s' #%d must be a string, got %s"):format(key, i, type(s)), level + 1)
    end
  end
end

-- The door of a declaration (an app:ws handlers table or app:http
-- options), checked: raises at the caller's line (level) on a bad value.
function M.compile(decl, fname, level)
  local door = { auth = decl.auth }
  if decl.auth ~= nil and type(decl.auth) ~= "function" then
    fail(fname, ("'auth' must be a function, got %s"):format(type(decl.auth)), level + 1)
  end
  if decl.origins ~= nil then
    string_list(decl.origins, "origins", fname, level + 1)
    door.origins = {}
    for _, o in ipairs(decl.origins) do
      -- an origin is scheme://host[:port], compared case-insensitively
      if not o:match("^[%a][%w+.-]*://[^/%s]+$") then
        fail(fname, ("origin '%s' is not scheme://host[:port] (no path, no trailing slash)"):format(o), level + 1)
      end
      door.origins[o:lower()] = true
    end
  end
  if decl.protocols ~= nil then
    string_list(decl.protocols, "protocols", fname, level + 1)
    for _, p in ipairs(decl.protocols) do
      if #p > 63 or not p:match(TOKEN) then
        fail(fname, ("subprotocol '%s' is not a token of at most 63 characters"):format(p), level + 1)
      end
    end
    door.protocols = decl.protocols
  end
  if not (door.auth or door.origins or door.protocols) then return nil end
  return door
end

-- The route's subprotocol for what the client offers: the first of the
-- route's list (its order of preference) that the client offers. nil when
-- none is offered; false and why when none matches.
local function pick_protocol(door, offered)
  if #offered == 0 then return nil end
  local wanted = door and door.protocols
  if not wanted then
    return false, ("this route takes no subprotocol (offered: %s)"):format(table.concat(offered, ", "))
  end
  local set = {}
  for _, p in ipairs(offered) do set[p] = true end
  for _, p in ipairs(wanted) do
    if set[p] then return p end
  end
  return false, ("none of the offered subprotocols (%s) is served here; this route takes: %s")
    :format(table.concat(offered, ", "), table.concat(wanted, ", "))
end

-- What an auth hook's results mean: true [, claims] lets the request in;
-- status, reason [, headers] refuses it with that answer; false or nil
-- (a hook that forgot to return, too) refuses with 403.
function M.answer(ok, a, b)
  if ok == true then return true, a end
  if ok == false or ok == nil then
    return false, 403, type(a) == "string" and a or "refused by the route's auth"
  end
  if type(ok) == "number" and ok % 1 == 0 and ok >= 300 and ok <= 599 then
    local headers
    if b ~= nil then
      if type(b) ~= "table" then error("auth: the headers of a refusal must be a table", 0) end
      headers = {}
      for k, v in pairs(b) do headers[tostring(k):lower()] = tostring(v) end
    end
    return false, ok, a ~= nil and tostring(a) or nil, headers
  end
  error(("auth must return true [, claims] or a status (300-599) and a reason, got %s %s")
    :format(type(ok), tostring(ok)), 0)
end

-- What is checked before the auth hook: nil if req may go on (and the
-- chosen subprotocol), else status, reason. req.headers must answer any
-- header name (custom ones too).
function M.screen(door, req)
  if door and door.origins then
    local origin = req.headers.origin
    -- Only browsers send Origin, and they cannot forge it; others can
    -- send anything, so its absence proves nothing either way.
    if origin and not door.origins[origin:lower()] then
      return 403, ("origin %s is not allowed here"):format(origin)
    end
  end
  if req.protocols then
    local protocol, why = pick_protocol(door, req.protocols)
    if protocol == false then return 400, why end
    req.protocol = protocol
  end
  return nil
end

-- The whole door, the auth hook answering at once: nil if req may pass
-- (and the claims of its auth, and the chosen subprotocol), else status,
-- reason, headers.
function M.check(door, req)
  local status, reason = M.screen(door, req)
  if status then return status, reason end
  if door and door.auth then
    local allowed, claims, why, headers = M.answer(door.auth(req))
    if not allowed then return claims, why, headers end
    return nil, claims, req.protocol
  end
  return nil, nil, req.protocol
end

return M
