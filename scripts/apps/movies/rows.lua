-- Rows of the movies app: decoding, strict validation and encoding.
--
-- Kept apart from app.lua so that it can be tested without a gateway
-- (spec/unit/movies_spec.lua). Pure Lua + lua-cjson; runs on Lua 5.1-5.4
-- and LuaJIT.

local cjson = require("cjson.safe").new()  -- own instance: our settings stay ours
cjson.decode_invalid_numbers(false)        -- reject NaN, Infinity, 0x10 …

local rows = {}

-- The fields of a row, in the order they are checked and encoded, as a
-- row schema (sluice.schema, checked in C): what the app tries first for
-- every message. It accepts a subset of what rows.decode + rows.check
-- accept (strict JSON, no duplicate keys) and writes the same text as
-- rows.encode; anything it refuses goes through the functions below,
-- which give the error messages.
rows.SCHEMA = {
  { "id", "string|number", optional = true },
  { "actorName", "string", nonempty = true },
  { "actorId", "string", nonempty = true },
  { "movieId", "string", nonempty = true },
  { "movieName", "string", nonempty = true },
  { "movieMinutes", "number", min = 0 },
}

-- The same lists for the Lua rules: every field name, and the non-empty
-- strings in schema order.
local KNOWN, STRING_FIELDS = {}, {}
for _, f in ipairs(rows.SCHEMA) do
  KNOWN[f[1]] = true
  if f[2] == "string" and f.nonempty then STRING_FIELDS[#STRING_FIELDS + 1] = f[1] end
end

local function finite(n)
  return n == n and n ~= math.huge and n ~= -math.huge
end

-- JSON text of a number that decodes back to the same number. (cjson
-- encodes with at most 14 significant digits, which changes large ids.)
local function number_json(n)
  if n == math.floor(n) and n > -2^53 and n < 2^53 then
    return string.format("%.0f", n)        -- integral: no ".0", no exponent
  end
  for digits = 15, 17 do
    local s = string.format("%." .. digits .. "g", n)
    if tonumber(s) == n then return s end
  end
  return string.format("%.17g", n)
end

-- rows.json(v) → JSON text of a decoded value (numbers without loss).
local function value_json(v)
  if type(v) == "number" then return number_json(v) end
  return (assert(cjson.encode(v)))
end
rows.json = value_json

-- JSON text of object keys, encoded once each.
local key_cache = {}
local function key_json(k)
  local j = key_cache[k]
  if j == nil then
    j = assert(cjson.encode(k))
    key_cache[k] = j
  end
  return j
end

-- Appends `"k":v` to the members in s (nil: none yet); nil v is left out.
local function member(s, k, v)
  if v == nil or k == nil then return s end
  local m = key_json(k) .. ":" .. value_json(v)
  if s == nil then return m end
  return s .. "," .. m
end

-- rows.object(k1, v1, k2, v2, …) → a JSON object with the keys in that
-- order; pairs whose value is nil are left out. At most 6 pairs. Fixed
-- parameters, not `...`: this runs per row, and LuaJIT compiles it.
function rows.object(k1, v1, k2, v2, k3, v3, k4, v4, k5, v5, k6, v6)
  local s = member(nil, k1, v1)
  if k2 ~= nil then
    s = member(s, k2, v2)
    s = member(s, k3, v3)
    s = member(s, k4, v4)
    s = member(s, k5, v5)
    s = member(s, k6, v6)
  end
  return "{" .. (s or "") .. "}"
end

-- rows.decode(text) → kind, value  or  nil, "malformed JSON: <decoder message>"
-- kind is "array" (a list of rows), "object" or "scalar". An empty JSON
-- array and an empty object both decode to {}, so the kind comes from the
-- text itself.
function rows.decode(text)
  local value, err = cjson.decode(text)
  if err then return nil, "malformed JSON: " .. err end
  local first = text:match("^%s*(.)")
  if first == "[" then return "array", value end
  if first == "{" then return "object", value end
  return "scalar", value
end

-- rows.id(row) → the row's own id when it is a valid one, else nil.
function rows.id(row)
  if type(row) ~= "table" then return nil end
  local id = row.id
  if type(id) == "string" or (type(id) == "number" and finite(id)) then
    return id
  end
  return nil
end

-- rows.check(row) → nil when the row is valid, else the error text
-- "invalid row: <field> <problem>".
function rows.check(row)
  if type(row) ~= "table" or row[1] ~= nil then
    return "invalid row: row must be a JSON object"
  end
  if row.id ~= nil and rows.id(row) == nil then
    return "invalid row: id must be a string or a number"
  end
  for _, field in ipairs(STRING_FIELDS) do
    local v = row[field]
    if type(v) ~= "string" or v == "" then
      return "invalid row: " .. field .. " must be a non-empty string"
    end
  end
  local minutes = row.movieMinutes
  if type(minutes) ~= "number" or not finite(minutes) or minutes < 0 then
    return "invalid row: movieMinutes must be a non-negative number"
  end
  -- Unknown fields are refused rather than silently dropped or passed on;
  -- report them in a stable (sorted) order (no table for a valid row).
  local unknown
  for k in pairs(row) do
    if not KNOWN[k] then
      unknown = unknown or {}
      unknown[#unknown + 1] = tostring(k)
    end
  end
  if unknown then
    table.sort(unknown)
    return "invalid row: " .. unknown[1] .. " is not a known field"
  end
  return nil
end

-- rows.encode(row) → the row as JSON text, fields in a fixed order.
-- Only for rows that passed rows.check.
function rows.encode(row)
  return rows.object("id", row.id, "actorName", row.actorName,
    "actorId", row.actorId, "movieId", row.movieId,
    "movieName", row.movieName, "movieMinutes", row.movieMinutes)
end

return rows
