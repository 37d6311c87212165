-- Declared routes (scripts/sluice/app/route.lua, bindings/route.c,
-- core/src/ingest.c): valid rows produced and acked in C, the rest to the
-- Lua message handler, against the embedded broker. Records are read back
-- with a consumer of the app's own.
local sluice = require "sluice"
local cjson = require "cjson"
local support = require "unit.support"

local wait, message = support.wait, support.message

local SCHEMA = {
  { "id", "string|number", optional = true },
  { "name", "string", nonempty = true },
  { "actor", "string", nonempty = true },
  { "minutes", "number", min = 0 },
}

local function raises(text, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error containing: " .. text)
  assert.matches(text, tostring(err), 1, true)
end

-- The count of Lua calls of one kind so far ("message handler", "delivery callback", …).
local function calls(app, what)
  local t = app.loop:handler_times()[what]
  return t and t.count or 0
end

describe("declared routes", function()
  local app, lua_got = nil, {}

  setup(function()
    app = support.app { name = "unit-route" }
    app:ws("/rows", {
      route = { schema = SCHEMA, topic = "unit-route-rows", key = "actor", ack = "id" },
      message = function(conn, data, binary)
        lua_got[#lua_got + 1] = data
        conn:send(cjson.encode { lua = data, row = conn:next_row(), binary = binary or nil })
      end,
    })
    app:ws("/plain", {   -- no message handler: the default refusal and dead letters
      route = { schema = sluice.schema(SCHEMA), topic = "unit-route-plain", dlq = "unit-route-plain.dlq" },
    })
    app:ws("/upper", {
      route = { schema = SCHEMA, topic = "unit-route-upper", key = "actor",
        transform = function(_, value, key)
          if key == "refuse" then return nil, "refused: " .. key end
          if key == "raise" then error("boom") end
          return value:upper(), key .. "!"
        end },
    })
    assert(app:start())
  end)

  teardown(function() app:close() end)

  -- Every record of topic, from the beginning, once `n` are there.
  local function records(topic, n)
    local got = {}
    local c = app:consume(topic, { broadcast = true, from = "beginning" }, function(rec)
      got[#got + 1] = rec
    end)
    wait(app, function() return #got >= n end, n .. " records of " .. topic, 30)
    support.settle(app, 0.2)
    c:close()
    return got
  end

  it("produces and acks valid rows in C, numbering rows without an id", function()
    local before_msg, before_dr = calls(app, "message handler"), calls(app, "delivery callback")
    local c = support.open_client(app, "/rows")
    c.conn:send('{"id":"a1","name":"N","actor":"x","minutes":3}')
    c.conn:send('{ "minutes": 1e2, "actor": "y", "name": "M" }')
    c.conn:send('{"id":7.5,"name":"O","actor":"x","minutes":0}')
    -- acks in Kafka's order: rows of different keys may overtake each other
    local acks = { message(app, c, 1), message(app, c, 2), (message(app, c, 3)) }
    table.sort(acks)
    assert.same({ '{"ack":"a1"}', '{"ack":2}', '{"ack":7.5}' }, acks)
    -- not one call into Lua for them, neither the message nor its report:
    -- the only message handler calls are our client's, one per ack
    assert.equal(before_msg + 3, calls(app, "message handler"))
    assert.equal(before_dr, calls(app, "delivery callback"))
    local got = records("unit-route-rows", 3)
    table.sort(got, function(a, b) return a.value < b.value end)
    assert.same({
      { "x", '{"id":"a1","name":"N","actor":"x","minutes":3}' },
      { "x", '{"id":7.5,"name":"O","actor":"x","minutes":0}' },
      { "y", '{"name":"M","actor":"y","minutes":100}' },
    }, { { got[1].key, got[1].value }, { got[2].key, got[2].value }, { got[3].key, got[3].value } })
    c.conn:close()
  end)

  it("hands what the schema refuses to the message handler, in one row count", function()
    local c = support.open_client(app, "/rows")
    c.conn:send('{"name":"N","actor":"x","minutes":1}')            -- row 1, C
    c.conn:send('{"name":"","actor":"x","minutes":1}')             -- row 2, Lua
    c.conn:send('{"name":"N","actor":"x","minutes":1}')            -- row 3, C
    c.conn:send('[{"name":"N","actor":"x","minutes":1},{"bad":1}]') -- one bad row: all Lua (row 4)
    c.conn:send("bin", true)
    local got = {}
    for i = 1, 5 do
      local m = cjson.decode((message(app, c, i)))
      got[m.ack or m.row] = m
    end
    assert.same({
      { ack = 1 },
      { lua = '{"name":"","actor":"x","minutes":1}', row = 2 },
      { ack = 3 },
      { lua = '[{"name":"N","actor":"x","minutes":1},{"bad":1}]', row = 4 },
      { lua = "bin", row = 5, binary = true },
    }, got)
    c.conn:close()
  end)

  it("takes a JSON array of valid rows in C, one ack per row, in order", function()
    local c = support.open_client(app, "/rows")
    local n_lua = #lua_got
    c.conn:send(' [ {"id":"r1","name":"N","actor":"x","minutes":1} ,' ..
                '{"name":"N","actor":"z","minutes":2}, {"id":3,"name":"N","actor":"x","minutes":3}] ')
    assert.equal('{"ack":"r1"}', message(app, c, 1))
    assert.equal('{"ack":2}', message(app, c, 2))
    assert.equal('{"ack":3}', message(app, c, 3))
    assert.equal(n_lua, #lua_got)
    -- text after the array, a trailing comma, an empty array: Lua's
    c.conn:send('[{"name":"N","actor":"x","minutes":1}] x')
    c.conn:send('[{"name":"N","actor":"x","minutes":1},]')
    c.conn:send('[]')
    wait(app, function() return #lua_got == n_lua + 3 end, "three messages for Lua")
    c.conn:close()
  end)

  it("refuses with the schema's reason and dead-letters when there is no message handler", function()
    local c = support.open_client(app, "/plain")
    c.conn:send('{"name":"N","actor":"x","minutes":-1}')
    c.conn:send('{"name":"N","actor":"x","minutes":1}')
    c.conn:send('not json')
    assert.equal('{"error":"INVALID: minutes must be at least 0","id":1}', (message(app, c, 1)))
    local second, third = message(app, c, 2), message(app, c, 3)
    if second:find("error") then second, third = third, second end
    assert.equal('{"ack":2}', second)
    assert.equal('{"error":"MALFORMED: invalid literal at byte 1","id":3}', third)
    local dead = records("unit-route-plain.dlq", 2)
    table.sort(dead, function(a, b) return a.value < b.value end)
    assert.same({ "not json", '{"name":"N","actor":"x","minutes":-1}' }, { dead[1].value, dead[2].value })
    assert.same({ "MALFORMED: invalid literal at byte 1", "INVALID: minutes must be at least 0" },
      { dead[1].headers.error, dead[2].headers.error })
    c.conn:close()
  end)

  it("runs a transform per row: its value and key are stored, its refusal is the row's error", function()
    local before = calls(app, "transform")
    local c = support.open_client(app, "/upper")
    c.conn:send('[{"id":1,"name":"n","actor":"a","minutes":1},{"id":2,"name":"n","actor":"refuse","minutes":1},' ..
                '{"id":3,"name":"n","actor":"raise","minutes":1}]')
    local got = {}
    for i = 1, 3 do got[i] = message(app, c, i) end
    table.sort(got)
    assert.same({ '{"ack":1}', '{"error":"handler failed","id":3}', '{"error":"refused: refuse","id":2}' }, got)
    assert.equal(before + 3, calls(app, "transform"))
    local rec = records("unit-route-upper", 1)
    assert.same({ "a!", '{"ID":1,"NAME":"N","ACTOR":"A","MINUTES":1}' }, { rec[1].key, rec[1].value })
    c.conn:close()
  end)

  it("swaps a declaration between two messages; rows in flight keep theirs", function()
    local c = support.open_client(app, "/rows")
    c.conn:send('{"id":"before","name":"N","actor":"x","minutes":1}')
    assert.equal('{"ack":"before"}', message(app, c, 1))
    app:ws("/rows", {
      route = { schema = SCHEMA, topic = "unit-route-rows2", key = "name", ack = "actor" },
    })
    c.conn:send('{"id":"after","name":"N2","actor":"x","minutes":1}')
    assert.equal('{"ack":"x"}', message(app, c, 2))
    local rec = records("unit-route-rows2", 1)
    assert.same({ "N2", '{"id":"after","name":"N2","actor":"x","minutes":1}' }, { rec[1].key, rec[1].value })
    c.conn:close()
  end)

  it("counts the rows of a declared route in the app's stats and the producer's topics", function()
    local s = app:stats()
    assert.equal(s.produced, s.delivered + s.delivery_failed + s.in_flight)
    local by_topic = {}
    for _, t in ipairs(app.producer:topics()) do by_topic[t.topic] = t end
    -- 3, 2 and 3 rows from the tests above, 1 before the swap
    assert.same({ 9, 9 }, { by_topic["unit-route-rows"].produced, by_topic["unit-route-rows"].delivered })
  end)

  it("refuses a bad declaration at the app:ws call", function()
    raises("route: unknown field 'topc'", function() app:ws("/x", { route = { schema = SCHEMA, topc = "t" } }) end)
    raises("route: topic must be a non-empty string", function() app:ws("/x", { route = { schema = SCHEMA } }) end)
    raises("key field 'nope' is not in the schema", function()
      app:ws("/x", { route = { schema = SCHEMA, topic = "t", key = "nope" } })
    end)
    raises("route: schema must be a field list or a sluice.schema", function()
      app:ws("/x", { route = { schema = "x", topic = "t" } })
    end)
  end)
end)

describe("sluice.core route:parse", function()
  local core = require "sluice.core"
  local route = core.route(core.schema(SCHEMA), { topic = "t", key = "actor", ack = "id", arrays = true })

  it("gives each row's canonical value, key and ack id", function()
    assert.same({ { value = '{"id":"q\\/1","name":"N","actor":"\195\169","minutes":2}', key = "\195\169", id = '"q\\/1"' } },
      route:parse('{"minutes":2.0,"actor":"\\u00e9","name":"N","id":"q/1"}'))
    assert.same({ { value = '{"name":"N","actor":"k","minutes":1}', key = "k" },
                  { value = '{"id":12,"name":"N","actor":"k","minutes":1}', key = "k", id = "12" } },
      route:parse('[{"name":"N","actor":"k","minutes":1},{"id":1.2e1,"name":"N","actor":"k","minutes":1}]'))
  end)

  it("refuses a whole array for one bad row, with that row's reason", function()
    local rows, err, code = route:parse('[{"name":"N","actor":"k","minutes":1},{"name":"N","minutes":1}]')
    assert.same({ nil, "INVALID: actor is missing", "INVALID" }, { rows, err, code })
    assert.same({ nil, "INVALID: a row must be a JSON object", "INVALID" }, { route:parse('[1]') })
  end)

  it("takes no arrays unless declared", function()
    local single = core.route(core.schema(SCHEMA), { topic = "t" })
    assert.same({ nil, "INVALID: a row must be a JSON object", "INVALID" },
      { single:parse('[{"name":"N","actor":"k","minutes":1}]') })
    assert.equal("t", single:topic())
  end)
end)
