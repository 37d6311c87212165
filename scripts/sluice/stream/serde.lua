-- sluice.stream's serdes: how record bytes become values (decoders) and
-- values become bytes (encoders), and the JSON instance they share.
local cjson = require "cjson"

local json = cjson.new()
json.encode_sparse_array(true)
json.encode_invalid_numbers(false)

local M = { json = json }

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local DECODERS = {
  string = function(b) return b end,
  json = function(b) if b == nil then return nil end return json.decode(b) end,
}

local function decoder(spec, fname)
  if spec == nil then return DECODERS.string end
  if type(spec) == "function" then return spec end
  local d = DECODERS[spec]
  if not d then argerror(2, fname, "value must be \"string\", \"json\" or a function") end
  return d
end

-- Default encoding of an output value: strings as they are, numbers as
-- text, tables as JSON, nil as a tombstone.
local function number_text(v)
  if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format("%d", v) end
  return tostring(v)
end

local function encode_default(v)
  local t = type(v)
  if v == nil or t == "string" then return v end
  if t == "table" then return json.encode(v) end
  if t == "number" then return number_text(v) end
  return tostring(v)
end

-- JSON numbers come back as floats under Lua 5.3+: make whole ones
-- integers again so that restored state prints as it did.
local tointeger = math.tointeger
local function integral(v)
  if tointeger and type(v) == "number" then return tointeger(v) or v end
  if type(v) ~= "table" then return v end
  local fix
  for k, x in pairs(v) do
    if type(x) == "table" then integral(x)
    elseif tointeger and type(x) == "number" and tointeger(x) then fix = fix or {}; fix[k] = tointeger(x) end
  end
  if fix then for k, x in pairs(fix) do v[k] = x end end
  return v
end

local function encoder(spec, fname)
  if spec == nil then return encode_default end
  if type(spec) == "function" then return spec end
  if spec == "json" then return function(v) if v == nil then return nil end return json.encode(v) end end
  if spec == "string" then
    return function(v)
      if type(v) == "number" then return number_text(v) end
      if v == nil then return nil end
      return tostring(v)
    end
  end
  argerror(2, fname, "value must be \"string\", \"json\" or a function")
end

M.decoder, M.encoder, M.encode_default, M.integral = decoder, encoder, encode_default, integral

return M
