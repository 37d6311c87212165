-- Small helpers shared by the sluice Lua modules.
local M = {}

-- Raise a misuse error naming the argument, reported at the caller's caller.
function M.argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

-- The directory of the library's own files, to tell them from the user's.
local LIB = "@" .. (debug.getinfo(1, "S").source:match("^@(.*/)[^/]*$") or "\0")

-- Raise for a key of table t (argument argn of fname) that is not in
-- known (name → true): a typo would otherwise be ignored. Reported at the
-- first caller outside the sluice library, so at the user's declaration.
function M.check_keys(t, known, fname, argn, what)
  for k in pairs(t) do
    if not known[k] then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      table.sort(names)
      M.user_argerror(argn, fname, ("unknown %s '%s'; known: %s")
        :format(what or "option", tostring(k), table.concat(names, ", ")))
    end
  end
end

-- Raise msg at the first caller outside the sluice library (however deep
-- inside it the check is; Lua 5.1's tail-call frames skipped).
function M.user_error(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or (info.source:sub(1, #LIB) ~= LIB and info.what ~= "tail") then break end
    level = level + 1
  end
  error(msg, level)
end

-- The same for a misuse error naming the argument.
function M.user_argerror(n, fname, msg)
  M.user_error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg))
end

function M.check(n, fname, value, expected, optional)
  local t = type(value)
  if t == expected or (optional and value == nil) then return value end
  M.argerror(n, fname, ("%s expected, got %s"):format(expected, t))
end

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

-- "a=1&b=x%20y" → { a = "1", b = "x y" }; a repeated name keeps the last.
function M.decode_query(qs)
  local t = {}
  if not qs or qs == "" then return t end
  for pair in qs:gmatch("[^&;]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    if k and k ~= "" then t[unescape(k)] = unescape(v) end
  end
  return t
end

-- The directory of a chunk name such as "@/path/to/app.lua", or nil.
function M.source_dir(source)
  if type(source) ~= "string" or source:sub(1, 1) ~= "@" then return nil end
  local path = source:sub(2)
  return path:match("^(.*)/[^/]*$") or "."
end

-- librdkafka wants strings; accept numbers and booleans for convenience.
function M.string_props(props, where)
  local out = {}
  for k, v in pairs(props or {}) do
    if type(k) ~= "string" then error(("bad %s: property names must be strings"):format(where), 3) end
    local t = type(v)
    if t == "string" then out[k] = v
    elseif t == "number" or t == "boolean" then out[k] = tostring(v)
    else error(("bad %s: property '%s' must be a string, number or boolean (got %s)"):format(where, k, t), 3) end
  end
  return out
end

-- xpcall(f, handler, ...) with its arguments on every Lua: PUC Lua 5.1's
-- xpcall passes none to f, so there the arguments travel in a closure.
local xpcall_passes_args = select(2, xpcall(function(a) return a end, debug.traceback, true)) == true
if xpcall_passes_args then
  M.xpcall = xpcall
else
  local unpack = table.unpack or unpack
  function M.xpcall(f, handler, ...)
    local n, args = select("#", ...), { ... }
    return xpcall(function() return f(unpack(args, 1, n)) end, handler)
  end
end

-- An object whose collection calls fn(): a userdata on Lua 5.1 and LuaJIT,
-- which run __gc only for userdata, a table on 5.2+ (no newproxy there).
function M.on_collect(fn)
  if newproxy then
    local sentinel = newproxy(true)
    getmetatable(sentinel).__gc = function() fn() end
    return sentinel
  end
  return setmetatable({}, { __gc = function() fn() end })
end

function M.copy(t)
  local out = {}
  for k, v in pairs(t or {}) do out[k] = v end
  return out
end

return M
