-- Row schemas (sluice.schema, bindings/schema.c over core/src/schema.c):
-- the Lua surface, and the movies app's schema against the Lua rules it
-- stands in for (scripts/apps/movies/rows.lua) on many generated texts.
local sluice = require "sluice"
local rows = require "apps.movies.rows"

local MOVIES = sluice.schema(rows.SCHEMA)

describe("sluice.schema", function()
  it("returns the canonical text and the fields asked for", function()
    local text = '{ "movieMinutes": 142, "movieName": "Forrest Gump", "movieId": "tt0109830",'
      .. ' "actorId": "nm0000158", "actorName": "Tom Hanks", "id": 7 }'
    local out, id, key, minutes = MOVIES:check(text, "id", "actorId", "movieMinutes")
    assert.equal('{"id":7,"actorName":"Tom Hanks","actorId":"nm0000158","movieId":"tt0109830",'
      .. '"movieName":"Forrest Gump","movieMinutes":142}', out)
    assert.equal(7, id)
    assert.equal("nm0000158", key)
    assert.equal(142, minutes)
    -- An optional field that is absent comes back as nil.
    local out2, id2 = MOVIES:check('{"actorName":"A","actorId":"B","movieId":"C","movieName":"D","movieMinutes":0}', "id")
    assert.equal('{"actorName":"A","actorId":"B","movieId":"C","movieName":"D","movieMinutes":0}', out2)
    assert.is_nil(id2)
  end)

  it("says what is wrong: INVALID for a broken rule, MALFORMED for text that is not JSON", function()
    assert.same({ nil, "INVALID: actorName must be a non-empty string", "INVALID" },
      { MOVIES:check('{"actorName":"","actorId":"B","movieId":"C","movieName":"D","movieMinutes":0}') })
    assert.same({ nil, "INVALID: movieMinutes must be at least 0", "INVALID" },
      { MOVIES:check('{"actorName":"A","actorId":"B","movieId":"C","movieName":"D","movieMinutes":-1}') })
    assert.same({ nil, "INVALID: rating is not a known field", "INVALID" },
      { MOVIES:check('{"rating":5}') })
    assert.same({ nil, "INVALID: actorName is missing", "INVALID" }, { MOVIES:check('{}') })
    assert.same({ nil, "MALFORMED: expected ':' at byte 14", "MALFORMED" },
      { MOVIES:check('{"actorName" "A"}') })
    assert.same({ nil, "MALFORMED: unexpected end of text at byte 1", "MALFORMED" }, { MOVIES:check("") })
  end)

  it("types: string, number, integer, boolean and unions; min and max", function()
    local s = sluice.schema {
      { "n", "integer", min = 1, max = 3 },
      { "flag", "boolean", optional = true },
      { "v", "string|number", optional = true },
    }
    assert.same({ '{"n":2,"flag":true,"v":"x"}', 2, true, "x" },
      { s:check('{"v":"x","flag":true,"n":2.0}', "n", "flag", "v") })
    assert.same({ nil, "INVALID: n must be an integer", "INVALID" }, { s:check('{"n":1.5}') })
    assert.same({ nil, "INVALID: n must be at most 3", "INVALID" }, { s:check('{"n":4}') })
    assert.same({ nil, "INVALID: flag must be a boolean", "INVALID" }, { s:check('{"n":1,"flag":1}') })
    assert.same({ nil, "INVALID: v must be a string or a number", "INVALID" }, { s:check('{"n":1,"v":null}') })
  end)

  it("raises on misuse: a bad definition, an unknown field name, a closed schema", function()
    assert.has_error(function() sluice.schema {} end)
    assert.has_error(function() sluice.schema { { "a", "text" } } end,
      "schema field a: unknown type 'text' (string, number, integer, boolean)")
    assert.has_error(function() sluice.schema { { "a", "string" }, { "a", "number" } } end,
      "schema: field a is named twice")
    assert.has_error(function() sluice.schema { { "a", "number", min = "0" } } end,
      "schema field a: min must be a number")
    assert.has_error(function() MOVIES:check("{}", "actor") end)
    local s = sluice.schema { { "a", "string" } }
    s:close()
    s:close()
    assert.has_error(function() s:check('{"a":"x"}') end, "attempt to use a closed sluice.schema")
  end)
end)

-- ---- the movies schema against rows.lua -----------------------------------

local random = math.random

local PLAIN = { "Tom Hanks", "nm0000158", "Forrest Gump", "a", "x y", "Penélope Cruz", "東京", "😀" }
local ESCAPED = { "\\\"", "\\\\", "\\/", "/", "\\n", "\\t", "\\b", "\\f", "\\r", "\\u0000", "\\u0001",
  "\\u001f", "\\u007f", "\127", "\\u00e9", "\\u20ac", "\\ud83d\\ude00", "\\uD83D\\uDE00", "\\u0041" }
local BAD_ESCAPED = { "\\ud800", "\\udc00", "\t", "\\x", "\194", "\237\160\128" }
local NUMBERS = { "0", "-0", "1", "142", "-1", "0.5", "1e2", "1E+2", "-1.25e-1", "123456789012345",
  "1234567890123456", "12345678901234567890", "9007199254740993", "0.1", "0.30000000000000004",
  "1e308", "1e309", "-1e309", "5e-324", "1e-400", "2.5e+3", "7", "90", "139" }
local BAD_NUMBERS = { "01", "1.", ".5", "+1", "0x10", "NaN", "Infinity", "1e" }

local function random_string()
  local parts = {}
  for _ = 1, random(0, 4) do
    local r = random()
    if r < 0.6 then parts[#parts + 1] = PLAIN[random(#PLAIN)]
    elseif r < 0.98 then parts[#parts + 1] = ESCAPED[random(#ESCAPED)]
    else parts[#parts + 1] = BAD_ESCAPED[random(#BAD_ESCAPED)] end
  end
  return '"' .. table.concat(parts) .. '"'
end

local function random_value(kind)
  local r = random()
  if kind == "string" and r < 0.95 then return random_string() end
  if kind == "number" and r < 0.94 then return NUMBERS[random(#NUMBERS)] end
  if kind == "number" and r < 0.96 then return BAD_NUMBERS[random(#BAD_NUMBERS)] end
  local others = { random_string, function() return NUMBERS[random(#NUMBERS)] end,
    function() return "null" end, function() return "true" end, function() return "[]" end,
    function() return '{"a":[1,{"b":null}]}' end, function() return '""' end }
  return others[random(#others)]()
end

local WS = { "", "", "", " ", "\n", "\t ", "\r\n" }
local function ws() return WS[random(#WS)] end

local FIELDS = { { "id", "number" }, { "actorName", "string" }, { "actorId", "string" },
  { "movieId", "string" }, { "movieName", "string" }, { "movieMinutes", "number" } }

-- A row-like text: the fields in any order, sometimes one missing, one
-- extra, one twice, an id that is a string; now and then a byte changed.
local function random_row()
  local members = {}
  for _, f in ipairs(FIELDS) do
    if not (f[1] == "id" and random() < 0.3) and random() > 0.03 then
      local kind = f[2]
      if f[1] == "id" and random() < 0.5 then kind = "string" end
      members[#members + 1] = '"' .. f[1] .. '"' .. ws() .. ":" .. ws() .. random_value(kind)
    end
  end
  if random() < 0.03 then members[#members + 1] = '"extra":1' end
  if random() < 0.03 and #members > 0 then members[#members + 1] = members[random(#members)] end
  for i = #members, 2, -1 do
    local j = random(i)
    members[i], members[j] = members[j], members[i]
  end
  local text = ws() .. "{" .. ws() .. table.concat(members, ws() .. "," .. ws()) .. ws() .. "}" .. ws()
  if random() < 0.05 then
    local i = random(#text)
    text = text:sub(1, i - 1) .. string.char(random(0, 255)) .. text:sub(i + 1)
  end
  return text
end

describe("the movies schema and rows.lua", function()
  it("accept the same rows and write the same text (20,000 generated texts)", function()
    math.randomseed(20261128)
    local accepted, invalid, malformed = 0, 0, 0
    for _ = 1, 20000 do
      local text = random_row()
      local out, id, key, err_code
      out, id, key = MOVIES:check(text, "id", "actorId")
      if not out then err_code = key end
      local kind, row = rows.decode(text)
      local problem = "not a JSON object"
      if kind == "object" then problem = rows.check(row) end
      if out then
        accepted = accepted + 1
        -- Everything the schema accepts, the Lua rules accept, and they
        -- write the same bytes; the values handed back are the row's.
        if problem then error(("schema accepted, rows.lua refused (%s): %q"):format(problem, text)) end
        local lua_out = rows.encode(row)
        if lua_out ~= out then error(("texts differ for %q:\n  C:   %s\n  Lua: %s"):format(text, out, lua_out)) end
        assert.equal(rows.id(row), id)
        assert.equal(row.actorId, key)
      elseif err_code == "INVALID" then
        invalid = invalid + 1
        -- A broken rule is broken for both, except a field given twice
        -- (lua-cjson keeps the last one).
        local msg = id
        if not problem and not msg:find("is given twice", 1, true) then
          error(("schema refused (%s), rows.lua accepted: %q"):format(msg, text))
        end
      else
        malformed = malformed + 1
        assert.equal("MALFORMED", err_code)
      end
    end
    -- The generator reaches all three outcomes often enough to mean something.
    assert.is_true(accepted > 2000, "accepted " .. accepted)
    assert.is_true(invalid > 2000, "invalid " .. invalid)
    assert.is_true(malformed > 2000, "malformed " .. malformed)
  end)
end)
